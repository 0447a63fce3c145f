"""MLflow tracking for training runs and the Model Registry for releases: a thin resource over mlflow.

dagster-mlflow's `mlflow_tracking` is a function resource whose end-of-run hook is built for op jobs;
under asset materializations its run stays RUNNING. This resource opens and closes one MLflow run
per checkpoint instead, from the Dagster side, so a training node needs no mlflow install.

Releases: one registered model per domain (`<registered_model_prefix><domain>`); a promoted release is
a new version, logged by the merge stage where its weights are (nexa_core/release/registry.py: mlflow is
needed there), and the alias `champion` is moved to it only once its merged weights are committed.
"""

import json
import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from nexa_core.release.registry import RegistryTarget
from resources.delta import PROJECT_ROOT

CHAMPION = "champion"  # the registry alias of each domain's promoted release


class MlflowTracking(dg.ConfigurableResource):
    tracking_uri: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'data' / 'mlflow.db'}",
        description="Any MLflow tracking URI; a local SQLite store by default",
    )
    artifact_location: str = Field(default=str(PROJECT_ROOT / "data" / "mlruns"))
    experiment: str = "nexa-students"
    registered_model_prefix: str = Field(default="nexa-", description="A domain's registered model is <prefix><domain>")

    def _mlflow(self):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow  # heavy import: only when something is logged or looked up

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow

    def _experiment_id(self, mlflow) -> str:
        experiment = mlflow.get_experiment_by_name(self.experiment)
        return (
            experiment.experiment_id
            if experiment
            else mlflow.create_experiment(
                self.experiment,
                artifact_location=Path(self.artifact_location).as_uri()
                if "://" not in self.artifact_location
                else self.artifact_location,
            )
        )

    def log_checkpoint(self, record: dict, config: dict, adapter_dir: str | None, tags: dict[str, str]) -> str:
        mlflow = self._mlflow()
        with mlflow.start_run(
            experiment_id=self._experiment_id(mlflow),
            run_name=f"{record['domain']}-sft-v{record['sft_version']}",
            tags=tags,
        ) as run:
            mlflow.log_params(_flatten(config))
            for row in record.get("curve", []):
                metrics = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
                if metrics:
                    mlflow.log_metrics(metrics, step=int(row["step"]))
            mlflow.log_metrics(
                {
                    k: record[k]
                    for k in ("final_loss", "best_loss", "wall_seconds", "gpu_seconds")
                    if record.get(k) is not None
                }
            )
            if adapter_dir and Path(adapter_dir).is_dir():
                mlflow.log_artifacts(adapter_dir, artifact_path="adapter")
            return run.info.run_id

    # --- the Model Registry ------------------------------------------------------------------------

    def registered_model(self, domain: str, line: str = "") -> str:
        """<prefix><domain>, or <prefix><domain>-<line> for another line of releases (a distilled student)."""
        return f"{self.registered_model_prefix}{domain}" + (f"-{line}" if line else "")

    def run_params(self, run_id: str | None) -> dict[str, str] | None:
        """The parameters a training run logged (its whole config, flattened); None when this store does
        not have the run."""
        if not run_id:
            return None
        from mlflow.exceptions import MlflowException

        try:
            return dict(self._mlflow().MlflowClient().get_run(run_id).data.params)
        except MlflowException:
            return None

    def champion_version(self, domain: str, line: str = "") -> int | None:
        """The registry version the alias `champion` of the domain's model (of that line) points at; None when
        there is none."""
        from mlflow.exceptions import MlflowException

        try:
            return int(
                self._mlflow()
                .MlflowClient()
                .get_model_version_by_alias(self.registered_model(domain, line), CHAMPION)
                .version
            )
        except MlflowException:  # no registered model, or no alias on it
            return None

    def registry_target(self, domain: str, line: str = "") -> RegistryTarget:
        """Where the merge stage registers a release of the domain (it logs the weights it merged, so this
        process never loads them). The alias is not moved there: promote() does that once the release is
        committed."""
        name = self.registered_model(domain, line)
        return RegistryTarget(self.tracking_uri, self._experiment_id(self._mlflow()), name)

    def promote(self, release: dict) -> None:
        """A committed release (its release_history row): the model card becomes the version's description
        and a run artifact, the row's ids its tags; then `champion` moves to it."""
        client = self._mlflow().MlflowClient()
        name, version = release["registered_model"], str(release["model_version"])
        client.log_text(release["mlflow_run_id"], release["model_card"], "model_card.md")
        client.update_model_version(name, version, description=release["model_card"])
        for key in ("release_id", "checkpoint_id", "merged_uri", "served_model"):
            client.set_model_version_tag(name, version, key, release[key])
        client.set_registered_model_alias(name, CHAMPION, version)


def _flatten(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return out
