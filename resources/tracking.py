"""MLflow tracking for training runs and the Model Registry for releases: a thin resource over mlflow.

dagster-mlflow's `mlflow_tracking` is a function resource whose end-of-run hook is built for op jobs;
under asset materializations its run stays RUNNING. This resource opens and closes one MLflow run
per checkpoint instead, from the Dagster side, so the GPU node needs no mlflow install.

Releases: one registered model per domain (`<registered_model_prefix><domain>`); a promoted release is
a new version, and the alias `champion` is moved to it only once its merged weights are committed.
"""

import json
import os
from importlib.metadata import version
from pathlib import Path

import dagster as dg
from pydantic import Field

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

    def registered_model(self, domain: str) -> str:
        return f"{self.registered_model_prefix}{domain}"

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

    def champion_version(self, domain: str) -> int | None:
        """The registry version the domain's alias `champion` points at; None when there is none."""
        from mlflow.exceptions import MlflowException

        try:
            return int(
                self._mlflow()
                .MlflowClient()
                .get_model_version_by_alias(self.registered_model(domain), CHAMPION)
                .version
            )
        except MlflowException:  # no registered model, or no alias on it
            return None

    def register_release(
        self, domain: str, components: dict, base_model_path: str | None, tags: dict[str, str]
    ) -> tuple[str, int, str]:
        """Log the model (with a LoRA adapter, the local base is referenced through base_model_path, not
        copied) in a run of its own and register it as a new version; (name, version, run id).
        The alias is not moved here: promote() does that once the release is committed."""
        from huggingface_hub import ModelCard

        mlflow = self._mlflow()
        name = self.registered_model(domain)
        packages = ["torch", "transformers", *(["peft"] if base_model_path else [])]
        with mlflow.start_run(
            experiment_id=self._experiment_id(mlflow), run_name=f"{domain}-release", tags=tags
        ) as run:
            info = mlflow.transformers.log_model(
                transformers_model=components,
                name="model",
                task="llm/v1/chat",
                base_model_path=base_model_path,
                registered_model_name=name,
                metadata=tags,
                # pinned here: mlflow's inference of requirements imports torchvision, which is not installed
                pip_requirements=[f"{p}=={version(p)}" for p in packages],
                # given, so mlflow does not look the card up on the hub
                model_card=ModelCard(f"# {name}\n\nThe model card is this version's description."),
            )
            return name, int(info.registered_model_version), run.info.run_id

    def promote(self, domain: str, model_version: int, run_id: str, card: str, tags: dict[str, str]) -> None:
        """The model card becomes the version's description and a run artifact; then `champion` moves."""
        client = self._mlflow().MlflowClient()
        name = self.registered_model(domain)
        client.log_text(run_id, card, "model_card.md")
        client.update_model_version(name, str(model_version), description=card)
        for key, value in tags.items():
            client.set_model_version_tag(name, str(model_version), key, value)
        client.set_registered_model_alias(name, CHAMPION, str(model_version))


def _flatten(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return out
