"""A release in the MLflow Model Registry, logged by the process that merged it (the merge stage), so the
orchestrator never loads the weights. The orchestrator names the target (tracking URI, experiment, model);
the alias `champion` is moved by the orchestrator once the release is committed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import version


@dataclass(frozen=True)
class RegistryTarget:
    tracking_uri: str
    experiment_id: str
    registered_model: str


def loggable_model(merged: dict):
    """(transformers components, local base path or None): a LoRA release is logged as its adapter over a
    referenced local base (not copied); a full fine-tune as its merged weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged["staging"])
    if merged["adapter"]:
        base = AutoModelForCausalLM.from_pretrained(merged["base_model_path"])
        model = PeftModel.from_pretrained(base, merged["adapter"])
        return {"model": model, "tokenizer": tokenizer}, merged["base_model_path"]
    return {"model": AutoModelForCausalLM.from_pretrained(merged["staging"]), "tokenizer": tokenizer}, None


def register_release(target: RegistryTarget, merged: dict, tags: dict[str, str]) -> dict:
    """Log the merged release in a run of its own and register it as a new version of the target model;
    returns registered_model, model_version and mlflow_run_id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from huggingface_hub import ModelCard

    components, base_model_path = loggable_model(merged)
    mlflow.set_tracking_uri(target.tracking_uri)
    packages = ["torch", "transformers", *(["peft"] if base_model_path else [])]
    name = target.registered_model
    with mlflow.start_run(experiment_id=target.experiment_id, run_name=f"{tags['domain']}-release", tags=tags) as run:
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
        return {
            "registered_model": name,
            "model_version": int(info.registered_model_version),
            "mlflow_run_id": run.info.run_id,
        }
