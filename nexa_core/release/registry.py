"""A release in the MLflow Model Registry, logged by the process that merged it (the merge stage), so the
orchestrator never loads the weights. The orchestrator names the target (tracking URI, experiment, model);
the alias `champion` is moved by the orchestrator once the release is committed.

The transformers flavor, task `llm/v1/chat` (pyfunc answers chat requests). A full-weight release is logged by
path: MLflow copies the merged folder, nothing is loaded again. A LoRA release is logged as its adapter over a
referenced local base (not copied): MLflow logs PEFT only from a loaded model."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import version

CHAT_TASK = "llm/v1/chat"
PIPELINE_TASK = "text-generation"  # the transformers pipeline MLflow builds for CHAT_TASK


@dataclass(frozen=True)
class RegistryTarget:
    tracking_uri: str
    experiment_id: str
    registered_model: str


def loggable_model(merged: dict):
    """(what MLflow logs, local base path or None): the merged folder's path for a full-weight release; for a
    LoRA release, its adapter over the base as transformers components, and the base's path."""
    if not merged["adapter"]:
        return merged["staging"], None
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(merged["base_model_path"])
    model = PeftModel.from_pretrained(base, merged["adapter"])
    return {"model": model, "tokenizer": AutoTokenizer.from_pretrained(merged["staging"])}, merged["base_model_path"]


def resolve_pipeline_class(task: str = PIPELINE_TASK) -> None:
    """transformers 5 names each pipeline's class by its dotted path, imported when a pipeline is built;
    MLflow 3.17 logging a folder reads the class's `__name__` ("'str' object has no attribute '__name__'").
    The one task's entry is imported in place, as transformers itself does when it builds that pipeline."""
    from transformers import pipelines

    _, entry, _ = pipelines.check_task(task)
    if isinstance(entry["impl"], str):
        module, _, name = entry["impl"].rpartition(".")
        entry["impl"] = getattr(importlib.import_module(module), name)


def register_release(target: RegistryTarget, merged: dict, tags: dict[str, str]) -> dict:
    """Log the merged release in a run of its own and register it as a new version of the target model;
    returns registered_model, model_version and mlflow_run_id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from huggingface_hub import ModelCard

    model, base_model_path = loggable_model(merged)
    if isinstance(model, str):
        resolve_pipeline_class()
    mlflow.set_tracking_uri(target.tracking_uri)
    packages = ["torch", "transformers", *(["peft"] if base_model_path else [])]
    name = target.registered_model
    with mlflow.start_run(experiment_id=target.experiment_id, run_name=f"{tags['domain']}-release", tags=tags) as run:
        info = mlflow.transformers.log_model(
            transformers_model=model,
            name="model",
            task=CHAT_TASK,
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
