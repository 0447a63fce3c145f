"""student_checkpoint: fine-tune the student on a domain's SFT set on a GPU node (or here), through
the training launcher. The asset is the Delta row that records the checkpoint; weights are files
under the launcher's artifact root."""

import dagster as dg
import polars as pl
from pydantic import Field

from nexa_assets.partitions import LAUNCHED
from nexa_assets.settings import REPLAY_OF, pinned, restatements_read, settings_class, stage_settings
from nexa_assets.side_tables import append_side_table, side_table_spec
from nexa_core.recipe import FinetuneConfig
from nexa_core.schemas import SPEED
from nexa_core.stage import SFTRequest
from nexa_core.tables import CHECKPOINT_HISTORY, RAW_DOCUMENTS, SFT_DATASET
from nexa_core.train.checkpoints import artifact_uri, checkpoint_row, loss_curve
from nexa_core.train.start import TrainingError, check_train_size
from resources.delta import DeltaStore, table_markdown
from resources.launcher import TrainingLauncher
from resources.tracking import MlflowTracking

GROUP = "train"
checkpoint_history = side_table_spec(CHECKPOINT_HISTORY, GROUP)


TrainSettings = settings_class(
    FinetuneConfig,
    "TrainSettings",
    "SFT's settings (nexa_core/configs/train_default.yaml).",
    base_model=(
        str | None,
        Field(default=None, description="not set here: SFT starts from student_base (set student_base.base_model)"),
    ),
    sft_version=pinned("sft_dataset"),
    restatements_version=pinned("restatements"),
    replay_of=REPLAY_OF,
)


@dg.asset(
    **LAUNCHED,
    group_name=GROUP,
    code_version="2",
    deps=[SFT_DATASET],
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
    if config.base_model is not None:
        raise dg.Failure(
            f"partition {domain}: student_checkpoint starts from student_base; set base_model in "
            f"student_base's settings instead"
        )
    if student_base.is_empty():
        raise dg.Failure(f"partition {domain}: student_base has no record; materialize it first")
    base = student_base.row(0, named=True)
    sft_version = delta.version(SFT_DATASET) if config.sft_version is None else config.sft_version
    if sft_version is None:
        raise dg.Failure(f"partition {domain}: sft_dataset has never been materialized")
    train_config = stage_settings(FinetuneConfig, config, base_model=base["model_uri"])
    restatements_uri, restatements_version, digest = restatements_read(delta, train_config, config.restatements_version)
    out_dir = launcher.output_dir(
        domain, sft_version, digest, f"replay-{config.replay_of}-sft" if config.replay_of else "sft"
    )
    train_rows, round_ = (
        delta.scan(SFT_DATASET, sft_version)
        .filter(pl.col("domain") == domain)
        .select((pl.col("split") == "train").sum(), pl.col("round").max())
        .collect()
        .row(0)
    )
    try:
        check_train_size(train_rows, train_config, domain, f"sft_dataset v{sft_version}")
    except TrainingError as exc:
        raise dg.Failure(f"{exc}; no training started") from exc
    request = SFTRequest(
        domain=domain,
        output_dir=out_dir,
        sft_uri=delta.uri(SFT_DATASET),
        sft_version=sft_version,
        documents_uri=delta.uri(RAW_DOCUMENTS),
        documents_version=base["documents_version"],
        restatements_uri=restatements_uri,
        restatements_version=restatements_version,
        overrides=train_config.changes(),
    )
    record, checks = launcher.run_stage(context, request, dict(delta.storage_options or {}))
    curve = record.pop("curve")
    here = artifact_uri(out_dir, record["finetune"]) if launcher.backend().runs_here else None  # MLflow uploads it
    run_id = tracking.log_checkpoint(
        {**record, "curve": curve},
        record["settings"],
        here,
        tags={"domain": domain, "dagster_run_id": context.run.run_id},
    )
    frame = checkpoint_row(
        domain, record, base, sft_version, digest, round_, out_dir, launcher.usd_per_gpu_hour, run_id, context.run_id
    )
    history = append_side_table(delta, CHECKPOINT_HISTORY, domain, frame)  # the asset holds the latest
    yield dg.Output(frame, metadata=checkpoint_metadata(frame.row(0, named=True), record, curve, tracking))
    context.log_event(history)
    yield from checks


def checkpoint_metadata(row: dict, record: dict, curve: list[dict], tracking: MlflowTracking) -> dict:
    losses = loss_curve(curve)
    return {
        "finetune": record["finetune"],
        "base_id": row["base_id"],
        "steps": record["steps"],
        "final_loss": record["final_loss"],
        "best_loss": record["best_loss"],
        "wall_seconds": round(record["wall_seconds"], 2),
        "gpu_seconds": round(record["gpu_seconds"], 2),
        "gpu_cost_usd": row["gpu_cost_usd"],
        "device": record["device"],
        "precision": record.get("precision", ""),
        **{name: row[name] for name in SPEED},  # tokens/s, MFU against the GEMM roof measured here, padding
        "sft_version": row["sft_version"],
        "round": row["round"],
        "qa_rows": record["qa_rows"],
        "replayed_rows": record["replayed_rows"],
        "resumed_from": record["resumed_from"] or "",
        "artifact_uri": row["artifact_uri"],
        "mlflow_run_id": row["mlflow_run_id"],
        "mlflow_tracking_uri": tracking.tracking_uri,
        "training_curve": dg.MetadataValue.md(table_markdown(losses, rows=len(losses))) if len(losses) else "",
    }
