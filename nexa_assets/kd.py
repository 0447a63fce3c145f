"""Logit-level distillation: teacher_logits (the domain's checkpoint's top-k log-probabilities on its SFT train
split and the documents it read, versioned in Delta) -> student_distilled (a depth-pruned copy of the checkpoint
trained on them), both launched where training runs (pool "gpu")."""

import dagster as dg
import polars as pl
from pydantic import Field

from nexa_assets.kd_scores import distilled_scores
from nexa_assets.metadata import versions_read
from nexa_assets.partitions import LAUNCHED
from nexa_assets.settings import settings_class, stage_settings
from nexa_assets.train import GROUP
from nexa_core.ids import content_id
from nexa_core.recipe import DistillConfig, TeacherLogitsConfig
from nexa_core.stage import DistillRequest, TeacherLogitsRequest
from nexa_core.tables import RAW_DOCUMENTS, SFT_DATASET, TEACHER_LOGITS
from nexa_core.train.checkpoints import distilled_row
from resources.delta import DeltaStore
from resources.launcher import TrainingLauncher

TeacherLogitsSettings = settings_class(
    TeacherLogitsConfig,
    "TeacherLogitsSettings",
    "The teacher's top-k settings (nexa_core/configs/teacher_logits_default.yaml).",
    documents=(
        bool,
        Field(default=True, description="also the corpus the teacher read (student_base), not only the train QA pairs"),
    ),
)

DistillSettings = settings_class(
    DistillConfig,
    "DistillSettings",
    "The distilled student's settings (nexa_core/configs/kd_default.yaml).",
    k=(int, Field(default=0, description="train on the checkpoint's cached top-k of this k; 0: the largest k cached")),
)


def the_checkpoint(domain: str, student_checkpoint: pl.DataFrame, launcher: TrainingLauncher) -> dict:
    if student_checkpoint.is_empty():
        raise dg.Failure(f"partition {domain}: student_checkpoint has no record; materialize it first")
    checkpoint = student_checkpoint.row(0, named=True)
    launcher.check_checkpoint(domain, checkpoint)
    return checkpoint


@dg.asset(
    **LAUNCHED,
    group_name=GROUP,
    code_version="1",
    kinds={"pytorch", "delta"},
)
def teacher_logits(
    context: dg.AssetExecutionContext,
    config: TeacherLogitsSettings,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    student_base: pl.DataFrame,
    student_checkpoint: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """The domain's checkpoint (the teacher) on its SFT train split and on the documents its base read: per row
    its tokens and labels, and at every position the teacher's top-k next tokens with their log-probabilities;
    keyed by teacher checkpoint, SFT and documents versions and k (logits_id), so a student trains without the
    teacher in memory and a second reuses them."""
    domain = context.partition_key
    checkpoint = the_checkpoint(domain, student_checkpoint, launcher)
    read = student_base.row(0, named=True).get("documents_version") if not student_base.is_empty() else None
    documents_version = read if config.documents else None  # None: the base read nothing, or not asked
    reading = (documents_version, config.sentence_passes, config.max_length) if documents_version is not None else ()
    logits_id = content_id(checkpoint["checkpoint_id"], checkpoint["sft_version"], config.k, *reading)
    output = f"{launcher.artifact_root.rstrip('/')}/{domain}/kd-{logits_id}/teacher-logits.parquet"
    request = TeacherLogitsRequest(
        domain=domain,
        teacher=checkpoint["artifact_uri"],
        sft_uri=delta.uri(SFT_DATASET),
        sft_version=checkpoint["sft_version"],
        documents_uri=delta.uri(RAW_DOCUMENTS) if documents_version is not None else None,
        documents_version=documents_version,
        output=output,
        expect_sha256=checkpoint["files_sha256"],
        overrides=stage_settings(TeacherLogitsConfig, config).changes(),
    )
    summary, _ = launcher.run_stage(context, request, dict(delta.storage_options or {}))
    rows = pl.read_parquet(output).with_columns(
        domain=pl.lit(domain),
        logits_id=pl.lit(logits_id),
        teacher_id=pl.lit(checkpoint["checkpoint_id"]),
        sft_version=pl.lit(checkpoint["sft_version"]),
        k=pl.lit(config.k),
    )
    return dg.Output(
        rows,
        metadata={
            "logits_id": logits_id,
            "teacher_id": checkpoint["checkpoint_id"],
            "sft_version": checkpoint["sft_version"],
            "k": config.k,
            "examples": summary["examples"],
            "document_blocks": summary["document_blocks"],
            "documents_version": documents_version,
            "tokens": summary["tokens"],
            "vocab_size": summary["vocab_size"],
            "seconds": summary["seconds"],
            **versions_read(delta, SFT_DATASET),
        },
    )


@dg.asset(
    **LAUNCHED,
    group_name=GROUP,
    code_version="1",
    kinds={"pytorch"},
    deps=[TEACHER_LOGITS],
    check_specs=[
        dg.AssetCheckSpec(
            "loss_decreased",
            asset="student_distilled",
            description="The distillation loss of the last step is below the first's.",
        )
    ],
)
def student_distilled(
    context: dg.AssetExecutionContext,
    config: DistillSettings,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    student_checkpoint: pl.DataFrame,
):
    """A depth-pruned copy of the domain's checkpoint (the layers whose removal changes its outputs least go)
    trained on the checkpoint's cached token distributions (teacher_logits) mixed with the ordinary loss."""
    domain = context.partition_key
    checkpoint = the_checkpoint(domain, student_checkpoint, launcher)
    version = delta.version(TEACHER_LOGITS)
    cached = (
        delta.scan(TEACHER_LOGITS, version)
        .filter((pl.col("domain") == domain) & (pl.col("teacher_id") == checkpoint["checkpoint_id"]))
        .select("logits_id", "k")
        .unique()
        .collect()
        if version is not None
        else pl.DataFrame()
    )
    if config.k:
        cached = cached.filter(pl.col("k") == config.k)
    if cached.is_empty():
        at_k = f" at k {config.k}" if config.k else ""
        raise dg.Failure(
            f"partition {domain}: teacher_logits has no logits of checkpoint {checkpoint['checkpoint_id']}{at_k}; "
            f"materialize teacher_logits for it first"
        )
    logits_id = cached.sort("k", descending=True)["logits_id"][0]
    kd_config = stage_settings(DistillConfig, config)
    out_dir = f"{launcher.artifact_root.rstrip('/')}/{domain}/distilled-{logits_id}-{kd_config.digest()}"
    request = DistillRequest(
        domain=domain,
        output_dir=out_dir,
        teacher=checkpoint["artifact_uri"],
        logits_uri=delta.uri(TEACHER_LOGITS),
        logits_version=version,
        logits_id=logits_id,
        overrides=kd_config.changes(),
    )
    record, _ = launcher.run_stage(context, request, dict(delta.storage_options or {}))
    row = distilled_row(domain, record, checkpoint, logits_id, version)
    yield dg.Output(
        pl.DataFrame([row]),
        metadata={
            **{k: row[k] for k in ("teacher_id", "logits_id", "kept_layers", "parameters", "teacher_parameters")},
            **{k: row[k] for k in ("steps", "first_loss", "final_loss", "precision", "device", "model_uri")},
            **({"pruned_sft_uri": row["pruned_sft_uri"]} if row["pruned_sft_uri"] else {}),
            "wall_seconds": round(row["wall_seconds"], 2),
            "size_ratio": row["parameters"] / row["teacher_parameters"],
            **versions_read(delta, TEACHER_LOGITS),
        },
    )
    yield dg.AssetCheckResult(
        asset_key="student_distilled",
        check_name="loss_decreased",
        passed=row["final_loss"] < row["first_loss"],
        metadata={"first_loss": row["first_loss"], "final_loss": row["final_loss"]},
    )


KD_ASSETS = [teacher_logits, student_distilled, distilled_scores]
