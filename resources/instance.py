"""The Dagster instance file in DAGSTER_HOME: the project's dagster.yaml (SQLite storage under
DAGSTER_HOME, the run queue and the GPU pool), plus Postgres storage for runs, event logs, schedules,
sensors and dynamic partitions when DAGSTER_PG_URL is set. One source file, one variable:
`python -m resources.instance DAGSTER_HOME` writes it (scripts/setup.sh does; nexa-run, nexa-domains and
nexa-release through nexa_assets.cli.ensure_dagster_home, told by resources.environment.Environment)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from resources.environment import PG_URL_VARIABLE, Environment

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def instance_config(postgres: bool) -> dict:
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    if postgres:  # by reference: the URL (and its password) never lands in the file
        config["storage"] = {"postgres": {"postgres_url": {"env": PG_URL_VARIABLE}}}
    return config


def write_instance_file(home: Path, postgres: bool) -> Path:
    """DAGSTER_HOME/dagster.yaml, rewritten when the choice of storage changed."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    wanted = instance_config(postgres)
    if not path.is_file() or yaml.safe_load(path.read_text()) != wanted:
        path.write_text(yaml.safe_dump(wanted, sort_keys=False))
    return path


if __name__ == "__main__":
    print(write_instance_file(Path(sys.argv[1]).resolve(), Environment.read().postgres))
