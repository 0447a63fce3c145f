"""student_checkpoint: fine-tune the student on a domain's SFT set on a GPU node (or here), through
the training launcher. The asset is the Delta row that records the checkpoint; weights are files
under the launcher's artifact root."""

import json
from datetime import datetime, timezone

import dagster as dg
import polars as pl

from nexa_assets.partitions import DELTA_PARTITION, domain_partitions
from nexa_core import schemas
from nexa_core.ids import content_id
from nexa_core.train import config_hash, load_config
from resources.delta import DeltaStore, table_markdown
from resources.launcher import TrainingLauncher
from resources.tracking import MlflowTracking

GROUP = "train"


class TrainSettings(dg.Config):
    overrides: dict = {}  # keys of nexa_core/configs/train_default.yaml, dotted for nested: {"lora.r": 8}


@dg.asset(partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="2",
          deps=["sft_dataset"], pool="gpu", kinds={"pytorch"},
          check_specs=[dg.AssetCheckSpec("loss_decreased", asset="student_checkpoint",
                                         description="Reported by the trainer: mean of the last 5 training losses "
                                                     "is below the mean of the first 5.")])
def student_checkpoint(context: dg.AssetExecutionContext, config: TrainSettings, delta: DeltaStore,
                       launcher: TrainingLauncher, tracking: MlflowTracking, student_base: pl.DataFrame):
    """The student fine-tuned with TRL on the pinned SFT version, starting from student_base (all weights of
    a config-built student, a LoRA adapter on a pretrained base), its files hashed and recorded."""
    domain = context.partition_key
    if "base_model" in config.overrides:
        raise dg.Failure(f"partition {domain}: student_checkpoint starts from student_base; set base_model in "
                         f"student_base's overrides instead")
    if student_base.is_empty():
        raise dg.Failure(f"partition {domain}: student_base has no record; materialize it first")
    base = student_base.row(0, named=True)
    sft_version = delta.version("sft_dataset")
    if sft_version is None:
        raise dg.Failure(f"partition {domain}: sft_dataset has never been materialized")
    overrides = {**config.overrides, "base_model": base["model_uri"]}
    train_config = load_config(overrides=overrides)
    digest = config_hash(train_config)
    out_dir = launcher.output_dir(domain, sft_version, digest)
    train_rows, round_ = delta.scan("sft_dataset", sft_version).filter(pl.col("domain") == domain).select(
        (pl.col("split") == "train").sum(), pl.col("round").max()).collect().row(0)
    if train_rows < train_config["min_train_examples"]:
        raise dg.Failure(f"partition {domain}: sft_dataset v{sft_version} has {train_rows} train examples, fewer "
                         f"than min_train_examples={train_config['min_train_examples']}; no training started")
    command = [launcher.python, "-m", "nexa_core.train", "--sft-uri", delta.uri("sft_dataset"),
               "--sft-version", str(sft_version), "--domain", domain, "--output-dir", out_dir,
               # the documents student_base read, replayed beside the QA pairs (lineage: through student_base)
               "--documents-uri", delta.uri("raw_documents"), "--documents-version", str(base["documents_version"]),
               *[arg for k, v in overrides.items() for arg in ("--set", f"{k}={json.dumps(v)}")]]
    record, checks = launcher.run_reporting(context, command, dict(delta.storage_options or {}), out_dir,
                                            "trainer", "record")
    curve = record.pop("curve")
    artifact = f"{out_dir}/{'model' if record['finetune'] == 'full' else 'adapter'}"
    run_id = tracking.log_checkpoint({**record, "curve": curve}, train_config,
                                     artifact if launcher.kind == "local" else None,
                                     tags={"domain": domain, "dagster_run_id": context.run.run_id})
    row = {
        "domain": domain, "checkpoint_id": content_id(domain, sft_version, digest, record["files"]),
        "artifact_uri": artifact, "files_sha256": json.dumps(record["files"], sort_keys=True),
        "base_model": base["base_model"], "base_id": base["base_id"], "finetune": record["finetune"],
        "lora": record["lora"], "config_hash": digest,
        "sft_version": sft_version, "round": round_, "train_examples": record["train_examples"],
        "steps": record["steps"],
        "resumed_from": record["resumed_from"], "final_loss": record["final_loss"],
        "best_loss": record["best_loss"], "best_eval_loss": record["best_eval_loss"],
        "wall_seconds": record["wall_seconds"], "gpu_seconds": record["gpu_seconds"],
        "gpu_cost_usd": record["gpu_seconds"] / 3600 * launcher.usd_per_gpu_hour, "device": record["device"],
        "mlflow_run_id": run_id, "created_at": datetime.now(timezone.utc),
    }
    frame = pl.DataFrame([row], schema=schemas.STUDENT_CHECKPOINT)
    delta.append("checkpoint_history", frame)  # every checkpoint ever made; the asset holds the latest
    logged = [{"step": r["step"], "loss": r["loss"]} for r in curve if "loss" in r]
    losses = pl.DataFrame(logged) if logged else pl.DataFrame()
    yield dg.Output(frame, metadata={
        "finetune": record["finetune"], "base_id": base["base_id"],
        "steps": record["steps"], "final_loss": record["final_loss"], "best_loss": record["best_loss"],
        "wall_seconds": round(record["wall_seconds"], 2), "gpu_seconds": round(record["gpu_seconds"], 2),
        "gpu_cost_usd": row["gpu_cost_usd"], "device": record["device"], "sft_version": sft_version, "round": round_,
        "qa_rows": record["qa_rows"], "replayed_rows": record["replayed_rows"],
        "resumed_from": record["resumed_from"] or "", "artifact_uri": row["artifact_uri"],
        "mlflow_run_id": run_id, "mlflow_tracking_uri": tracking.tracking_uri,
        "training_curve": dg.MetadataValue.md(table_markdown(losses, rows=len(losses))) if len(losses) else "",
    })
    yield from checks
