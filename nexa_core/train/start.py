"""How a training stage starts (the reading stage, nexa_core.train.pretrain, and SFT, nexa_core.train.trainer): its
request's flags and typed settings, the model it starts from (a named base resolved), what the settings decide
about it (every weight or a LoRA adapter, attention, the least train split), and the loss check sent back."""

from __future__ import annotations

import json
from pathlib import Path

from nexa_core.artifacts import MANIFEST
from nexa_core.models.bases import BaseModelError, resolve_base
from nexa_core.recipe import FinetuneConfig, TrainerConfig
from nexa_core.stage import serve


class TrainingError(ValueError):
    pass


def stage_main(argv: list[str] | None, description: str, request_type, run_stage) -> int:
    """The reading stage's and SFT's entry: their request's flags and typed settings (an unknown or mistyped
    setting stops it here, named); the record goes back with the loss_decreased check."""
    request = request_type.parse(argv, description)
    settings = request.recipe()

    def work(log) -> dict:
        def step_metrics(row: dict) -> None:  # per-step training metrics, streamed into the Dagster run log
            log("step {step}: ".format(**row) + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"))

        return run_stage(request, settings, log, step_metrics)

    return serve(request, work, after=report_loss_check)


def report_loss_check(pipes, record: dict) -> None:
    losses = [r["loss"] for r in record["curve"] if "loss" in r]
    k = min(5, len(losses) // 2)  # the first and last k logged losses never overlap
    first, last = (sum(losses[:k]) / k, sum(losses[-k:]) / k) if k else (0, 0)
    pipes.report_asset_check(
        check_name="loss_decreased",
        passed=bool(k) and last < first,
        metadata={"first_losses_mean": first, "last_losses_mean": last, "logged_losses": len(losses)},
    )


def start_model(base: str, bases_dir: Path | str, domain: str, log=print) -> str:
    """The folder (or hub id) a base name resolves to (a named embedded base is converted once); a base
    that cannot be had is an error naming the partition, the base and the fix, never a fallback."""
    try:
        return resolve_base(base, bases_dir, log=log)
    except BaseModelError as exc:
        raise TrainingError(f"partition {domain}: {exc}") from exc


def bases_dir(args) -> Path:
    """Where named bases are converted: --bases-dir (the launcher's artifact root/bases), else beside the
    stage's output folder's domain folder."""
    return Path(args.bases_dir) if args.bases_dir else Path(args.output_dir).resolve().parent.parent / "bases"


def full_finetune(settings: FinetuneConfig, base_dir: str) -> bool:
    """`finetune: auto` trains every weight of a student built from a config (LoRA on frozen random
    weights teaches next to nothing) and a LoRA adapter on a pretrained base."""
    if settings.finetune != "auto":
        return settings.finetune == "full"
    manifest = Path(base_dir) / MANIFEST
    return manifest.is_file() and bool(json.loads(manifest.read_text()).get("built_from_config"))


def attention(settings: TrainerConfig) -> str | None:
    """The configured attention implementation; `auto` lets load_student choose."""
    return None if settings.attn_implementation == "auto" else settings.attn_implementation


def check_train_size(train_examples: int, settings: FinetuneConfig, domain: str, what: str) -> None:
    """Refuse to train on fewer than `min_train_examples`: checked before launching and again on the node."""
    if train_examples < settings.min_train_examples:
        raise TrainingError(
            f"partition {domain}: {what} has {train_examples} train examples, fewer than "
            f"min_train_examples={settings.min_train_examples}; add data or lower the setting"
        )


# LoRA targets by architecture; anything else gets PEFT's "all-linear".
LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def lora_targets(model, requested: list[str] | str | None) -> list[str] | str:
    """The LoRA target modules: the requested ones (each must exist in the model) or the
    architecture's defaults."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if requested in (None, "auto", []):
        return LORA_TARGETS.get(model.config.model_type, "all-linear")
    if requested in ("all-linear", ["all-linear"]):
        return "all-linear"
    missing = [t for t in requested if t not in names]
    if missing:
        raise ValueError(
            f"lora.target_modules {missing} are not modules of {model.config.model_type}; "
            f"candidates: {sorted(n for n in names if 'proj' in n or 'attn' in n or 'fc' in n)[:20]}"
        )
    return list(requested)


def lora_config(settings: FinetuneConfig, model):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora.r,
        lora_alpha=settings.lora.alpha,
        lora_dropout=settings.lora.dropout,
        target_modules=lora_targets(model, settings.lora.target_modules),
        task_type="CAUSAL_LM",
    )
