"""ASSET.KEY settings as Dagster run config: the one codec behind nexa-run's --set and the SDK's settings.
Plain Python, so the SDK stays free of the code location."""

from __future__ import annotations

from collections.abc import Collection, Mapping


class SettingError(ValueError):
    """An ASSET.KEY setting that names no asset of the job, or no setting of the asset."""


def add_setting(ops: dict, fields: Mapping[str, Collection[str]], job: str, target: str, value) -> dict:
    """One ASSET.KEY = value into Dagster run config `ops`: a field of the asset's config, or else a key of
    its `overrides` (the stage's YAML config, dotted for nested keys). `fields`: the config fields of each
    asset in `job`."""
    asset, _, key = target.partition(".")
    if not key:
        raise SettingError(f"expected ASSET.KEY=VALUE, e.g. student_checkpoint.num_train_epochs=1, not {target!r}")
    if asset not in fields:
        raise SettingError(f"no asset {asset!r} in {job}; assets: {', '.join(sorted(fields))}")
    config = ops.setdefault(asset, {"config": {}})["config"]
    if key in fields[asset]:
        config[key] = value
    elif "overrides" in fields[asset]:
        config.setdefault("overrides", {})[key] = value
    else:
        raise SettingError(f"{asset} has no setting {key!r}; settings: {', '.join(sorted(fields[asset])) or 'none'}")
    return ops
