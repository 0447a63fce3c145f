"""student_checkpoint: fine-tune the student on a domain's SFT set on a GPU node (or here), through
the training launcher. The asset is the Delta row that records the checkpoint; weights are files
under the launcher's artifact root."""

import dagster as dg
import polars as pl

from nexa_assets.partitions import DELTA_PARTITION, domain_partitions
from nexa_core.checkpoints import artifact_uri, checkpoint_row, loss_curve
from nexa_core.train import TrainingError, check_train_size, config_hash, load_config, set_arguments
from resources.delta import DeltaStore, table_markdown
from resources.launcher import TrainingLauncher
from resources.tracking import MlflowTracking

GROUP = "train"


class TrainSettings(dg.Config):
    overrides: dict = {}  # keys of nexa_core/configs/train_default.yaml, dotted for nested: {"lora.r": 8}


@dg.asset(
    partitions_def=domain_partitions,
    group_name=GROUP,
    metadata=DELTA_PARTITION,
    code_version="2",
    deps=["sft_dataset"],
    pool="gpu",
    kinds={"pytorch"},
    check_specs=[
        dg.AssetCheckSpec(
            "loss_decreased",
            asset="student_checkpoint",
            description="Reported by the trainer: mean of the last 5 training losses is below the mean of the first 5.",
        )
    ],
)
def student_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainSettings,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    tracking: MlflowTracking,
    student_base: pl.DataFrame,
):
    """The student fine-tuned with TRL on the pinned SFT version, starting from student_base (all weights of
    a config-built student, a LoRA adapter on a pretrained base), its files hashed and recorded."""
    domain = context.partition_key
    if "base_model" in config.overrides:
        raise dg.Failure(
            f"partition {domain}: student_checkpoint starts from student_base; set base_model in "
            f"student_base's overrides instead"
        )
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
    train_rows, round_ = (
        delta.scan("sft_dataset", sft_version)
        .filter(pl.col("domain") == domain)
        .select((pl.col("split") == "train").sum(), pl.col("round").max())
        .collect()
        .row(0)
    )
    try:
        check_train_size(train_rows, train_config, domain, f"sft_dataset v{sft_version}")
    except TrainingError as exc:
        raise dg.Failure(f"{exc}; no training started") from exc
    record, checks = launcher.run_reporting(
        context,
        "nexa_core.train",
        [
            "--sft-uri",
            delta.uri("sft_dataset"),
            "--sft-version",
            str(sft_version),
            "--domain",
            domain,
            "--output-dir",
            out_dir,
            # the documents student_base read, replayed beside the QA pairs (lineage: through student_base)
            "--documents-uri",
            delta.uri("raw_documents"),
            "--documents-version",
            str(base["documents_version"]),
            *set_arguments(overrides),
        ],
        dict(delta.storage_options or {}),
        out_dir,
        "trainer",
        "record",
        distributed=True,
    )
    curve = record.pop("curve")
    here = artifact_uri(out_dir, record["finetune"]) if launcher.backend().runs_here else None  # MLflow uploads it
    run_id = tracking.log_checkpoint(
        {**record, "curve": curve}, train_config, here, tags={"domain": domain, "dagster_run_id": context.run.run_id}
    )
    frame = checkpoint_row(
        domain, record, base, sft_version, digest, round_, out_dir, launcher.usd_per_gpu_hour, run_id
    )
    row = frame.row(0, named=True)
    delta.append("checkpoint_history", frame)  # every checkpoint ever made; the asset holds the latest
    losses = loss_curve(curve)
    yield dg.Output(
        frame,
        metadata={
            "finetune": record["finetune"],
            "base_id": base["base_id"],
            "steps": record["steps"],
            "final_loss": record["final_loss"],
            "best_loss": record["best_loss"],
            "wall_seconds": round(record["wall_seconds"], 2),
            "gpu_seconds": round(record["gpu_seconds"], 2),
            "gpu_cost_usd": row["gpu_cost_usd"],
            "device": record["device"],
            "precision": record.get("precision", ""),
            "sft_version": sft_version,
            "round": round_,
            "qa_rows": record["qa_rows"],
            "replayed_rows": record["replayed_rows"],
            "resumed_from": record["resumed_from"] or "",
            "artifact_uri": row["artifact_uri"],
            "mlflow_run_id": run_id,
            "mlflow_tracking_uri": tracking.tracking_uri,
            "training_curve": dg.MetadataValue.md(table_markdown(losses, rows=len(losses))) if len(losses) else "",
        },
    )
    yield from checks
