"""ASSET.KEY settings as Dagster run config: the one codec behind nexa-run's --set, the SDK's settings and a
sweep's grid. Plain Python, so the SDK stays free of the code location."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping

import yaml

# YAML 1.1 (PyYAML) reads 1e-4 as text; a setting written so is meant as a number
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def setting_value(text: str):
    """A setting's value as written on a command line: YAML (1, 0.5, true, [a, b], null), 1e-4 a number."""
    value = yaml.safe_load(text)
    return float(value) if isinstance(value, str) and _NUMBER.match(value) else value


def grid_values(specs: list[str]) -> dict[str, list]:
    """--grid ASSET.KEY=V1,V2,... as {ASSET.KEY: [values]}, each value read as setting_value reads it."""
    grid: dict[str, list] = {}
    for spec in specs:
        target, sep, values = spec.partition("=")
        if not sep or "." not in target or not values.strip():
            raise SettingError(
                f"--grid {spec!r}: expected ASSET.KEY=V1,V2,..., e.g. student_checkpoint.learning_rate=1e-4,5e-4"
            )
        if target in grid:
            raise SettingError(f"--grid {target} is given twice")
        grid[target] = [setting_value(v.strip()) for v in values.split(",")]
    return grid


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
