"""ASSET.KEY settings as Dagster run config: the one codec behind nexa-run's --set, the SDK's settings and a
sweep's grid. Plain Python, so the SDK stays free of the code location."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping


class SettingError(ValueError):
    """An ASSET.KEY setting that names no asset of the job, or no setting of the asset."""


def add_setting(ops: dict, fields: Mapping[str, Collection[str]], job: str, target: str, value) -> dict:
    """One ASSET.KEY = value into Dagster run config `ops`. `fields`: each asset's settings in `job` as dotted keys
    (`lora.r` reaches into the nested `lora`); an unknown key is an error naming the closest known ones."""
    asset, _, key = target.partition(".")
    if not key:
        raise SettingError(f"expected ASSET.KEY=VALUE, e.g. student_checkpoint.num_train_epochs=1, not {target!r}")
    if asset not in fields:
        close = difflib.get_close_matches(asset, list(fields), n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else f"assets: {', '.join(sorted(fields))}"
        raise SettingError(f"no asset {asset!r} in {job}; {hint}")
    known = sorted(fields[asset])
    if key not in known:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"settings: {', '.join(known) or 'none'}"
        raise SettingError(f"{asset} has no setting {key!r}; {hint}")
    node = ops.setdefault(asset, {"config": {}})["config"]
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return ops
