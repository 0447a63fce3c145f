"""MLflow tracking for training runs: a thin resource over mlflow.

dagster-mlflow's `mlflow_tracking` is a function resource whose end-of-run hook is built for op jobs;
under asset materializations its run stays RUNNING. This resource opens and closes one MLflow run
per checkpoint instead, from the Dagster side, so the GPU node needs no mlflow install.
"""

import json
import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.delta import PROJECT_ROOT


class MlflowTracking(dg.ConfigurableResource):
    tracking_uri: str = Field(default=f"sqlite:///{PROJECT_ROOT / 'data' / 'mlflow.db'}",
                              description="Any MLflow tracking URI; a local SQLite store by default")
    artifact_location: str = Field(default=str(PROJECT_ROOT / "data" / "mlruns"))
    experiment: str = "nexa-students"

    def log_checkpoint(self, record: dict, config: dict, adapter_dir: str | None, tags: dict[str, str]) -> str:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow  # heavy import: only when a checkpoint is logged

        mlflow.set_tracking_uri(self.tracking_uri)
        experiment = mlflow.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(
            self.experiment, artifact_location=Path(self.artifact_location).as_uri()
            if "://" not in self.artifact_location else self.artifact_location)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{record['domain']}-sft-v{record['sft_version']}",
                              tags=tags) as run:
            mlflow.log_params(_flatten(config))
            for row in record.get("curve", []):
                metrics = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
                if metrics:
                    mlflow.log_metrics(metrics, step=int(row["step"]))
            mlflow.log_metrics({k: record[k] for k in ("final_loss", "best_loss", "wall_seconds", "gpu_seconds")
                                if record.get(k) is not None})
            if adapter_dir and Path(adapter_dir).is_dir():
                mlflow.log_artifacts(adapter_dir, artifact_path="adapter")
            return run.info.run_id


def _flatten(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return out
