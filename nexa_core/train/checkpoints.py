"""The Delta rows that record a student: student_base (after reading its domain), student_checkpoint
(after SFT) and student_distilled (a smaller student taught by a checkpoint), built from the record the
launched stage reported through Pipes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import polars as pl

from nexa_core import schemas
from nexa_core.ids import content_id


def settings_json(record: dict) -> str | None:
    """The stage's typed settings as it reported them (null for a model folder committed before they were)."""
    return json.dumps(record["settings"], sort_keys=True) if record.get("settings") is not None else None


def speed_columns(record: dict) -> dict:
    """The stage's speed (schemas.SPEED: tokens/s, MFU, the GEMM roof, padding share) from its record; null for a
    record made before they were counted. An older record's tokens/s is its trained tokens over its time."""
    columns = {name: record.get(name) for name in schemas.SPEED}
    if columns["tokens_per_second"] is None and record.get("trained_tokens") and record.get("wall_seconds"):
        columns["tokens_per_second"] = record["trained_tokens"] / record["wall_seconds"]
    return columns


def base_row(domain: str, record: dict, documents_version: int, config_hash: str) -> pl.DataFrame:
    """The student_base row. A base used as it is (not read into) reports no tokens, loss or times."""
    return pl.DataFrame(
        [
            {
                "domain": domain,
                "base_id": content_id(domain, documents_version, config_hash, record["files"]),
                "base_model": record["base_model"],
                "model_uri": record["model_path"],
                "files_sha256": json.dumps(record["files"], sort_keys=True),
                "built_from_config": record["built_from_config"],
                "trained": record["trained"],
                "documents": record["documents"],
                "documents_version": documents_version,
                "read_tokens": record.get("epoch_tokens", record.get("trained_tokens", 0)),  # a pass over all it read
                "steps": record["steps"],
                "final_loss": record.get("final_loss"),
                "wall_seconds": record.get("wall_seconds", 0.0),
                "gpu_seconds": record.get("gpu_seconds", 0.0),
                "device": record.get("device", ""),
                "precision": record.get("precision"),
                **speed_columns(record),
                "config_hash": config_hash,
                "settings": settings_json(record),
                "restatements_version": record.get("restatements_version"),
                "created_at": datetime.now(timezone.utc),
            }
        ],
        schema=schemas.STUDENT_BASE,
    )


def artifact_uri(out_dir: str, finetune: str) -> str:
    """Where the trainer committed the student: the whole model, or the LoRA adapter."""
    return f"{out_dir}/{'model' if finetune == 'full' else 'adapter'}"


def checkpoint_row(
    domain: str,
    record: dict,
    base: dict,
    sft_version: int,
    config_hash: str,
    round_: int,
    out_dir: str,
    usd_per_gpu_hour: float,
    mlflow_run_id: str | None,
    dagster_run_id: str | None = None,
) -> pl.DataFrame:
    """The student_checkpoint row: what SFT of `base` (a student_base row) on an SFT version made, and what
    its GPU time cost."""
    return pl.DataFrame(
        [
            {
                "domain": domain,
                "checkpoint_id": content_id(domain, sft_version, config_hash, record["files"]),
                "artifact_uri": artifact_uri(out_dir, record["finetune"]),
                "files_sha256": json.dumps(record["files"], sort_keys=True),
                "base_model": base["base_model"],
                "base_id": base["base_id"],
                "finetune": record["finetune"],
                "lora": record["lora"],
                "config_hash": config_hash,
                "settings": settings_json(record),
                "restatements_version": record.get("restatements_version"),
                "sft_version": sft_version,
                "round": round_,
                "train_examples": record["train_examples"],
                "steps": record["steps"],
                "resumed_from": record["resumed_from"],
                "final_loss": record["final_loss"],
                "best_loss": record["best_loss"],
                "best_eval_loss": record["best_eval_loss"],
                "wall_seconds": record["wall_seconds"],
                "gpu_seconds": record["gpu_seconds"],
                "gpu_cost_usd": record["gpu_seconds"] / 3600 * usd_per_gpu_hour,
                "device": record["device"],
                "precision": record.get("precision"),
                "trained_tokens": record.get("trained_tokens"),
                **speed_columns(record),
                "mlflow_run_id": mlflow_run_id,
                "dagster_run_id": dagster_run_id,
                "created_at": datetime.now(timezone.utc),
            }
        ],
        schema=schemas.STUDENT_CHECKPOINT,
    )


def distilled_row(domain: str, record: dict, checkpoint: dict, logits_id: str, logits_version: int) -> dict:
    """student_distilled's row: the student, the teacher checkpoint and the cached logits it learned from."""
    sft_only = record.get("sft_only", {})
    return {
        "domain": domain,
        "distilled_id": content_id(logits_id, record["files"]),
        "teacher_id": checkpoint["checkpoint_id"],
        "teacher_uri": checkpoint["artifact_uri"],
        "sft_version": checkpoint["sft_version"],
        "logits_id": logits_id,
        "logits_version": logits_version,
        "model_uri": record["model_path"],
        "pruned_sft_uri": sft_only.get("model_path"),
        "kept_layers": json.dumps(record["kept_layers"]),
        **{k: record[k] for k in ("teacher_layers", "parameters", "teacher_parameters", "steps")},
        **{k: record[k] for k in ("first_loss", "final_loss", "wall_seconds")},
        "sft_only_final_loss": sft_only.get("final_loss"),
        **{k: record[k] for k in ("trained_tokens", "precision", "device")},
        **speed_columns(record),
        "files_sha256": json.dumps(record["files"], sort_keys=True),
        "kd_config": settings_json(record),
    }


def loss_curve(curve: list[dict]) -> pl.DataFrame:
    """(step, loss) of the logged training steps; evaluation rows of the curve carry no loss."""
    logged = [{"step": r["step"], "loss": r["loss"]} for r in curve if "loss" in r]
    return pl.DataFrame(logged) if logged else pl.DataFrame()


def eval_dir(artifact_uri: str) -> str:
    """Where a checkpoint's evaluation outputs (predictions, benchmark scores) go: beside its files."""
    return f"{artifact_uri.rsplit('/', 1)[0]}/eval"
