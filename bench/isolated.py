"""The graph in a temporary home for a benchmark: its own Delta root, artifact root, reports, MLflow store and
Dagster instance, offline, so a benchmark neither reads nor disturbs a user's runs."""

import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def print_machine() -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}; command: {' '.join(sys.argv)}"
    )


def isolated_graph(prefix: str, domains: list[str]):
    """(temporary folder, Dagster instance, Definitions) with the domains' partitions added."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DAGSTER_HOME": str(tmp / "home"),
            "NEXA_DELTA_ROOT": str(tmp / "delta"),
            "NEXA_ARTIFACT_ROOT": str(tmp / "artifacts"),
            "NEXA_REPORT_DIR": str(tmp / "reports"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        }
    )
    from nexa_assets.cli import ensure_dagster_home
    from resources.environment import Environment

    ensure_dagster_home(Environment.read().dagster_home)
    import dagster as dg

    from nexa_assets.definitions import defs
    from nexa_assets.partitions import domain_partitions

    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(domain_partitions.name, domains)
    return tmp, instance, defs


def smoke_config(steps: int) -> dict:
    """Run config of a smoke run: a smaller config-built student, a few steps of reading and training, short
    answers; every stage runs, in seconds, and its figures mean nothing."""
    small = {"hidden_size": 64, "layers": 2, "heads": 2, "vocab_size": 1024}
    read = {"base_model": "nexa-tiny-llama", "max_steps": steps, "student": small}
    return {
        "student_checkpoint": {"config": {"max_steps": steps}},
        "student_base": {"config": read},
        "eval_predictions": {"config": {"max_new_tokens": 8}},
    }
