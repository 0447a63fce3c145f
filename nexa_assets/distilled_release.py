"""distilled_release: the domain's distilled student released as its own registered model (<model>-distilled),
through a blocking gate on distilled_scores (it beats the base and keeps min_kept of its teacher's score), with
the merge and registration launched like the champion's (nexa_assets/release.py). `nexa-serve DOMAIN
--distilled` serves it."""

import dagster as dg
import polars as pl

from nexa_assets.metadata import recorded_where
from nexa_assets.partitions import DELTA_PARTITION, domain_partitions
from nexa_assets.release import GROUP, merged_release, published
from nexa_assets.settings import settings_class
from nexa_core.release.distilled import (
    DistilledGateConfig,
    distilled_card,
    distilled_checkpoint,
    distilled_costs,
    distilled_gate,
)
from nexa_core.release.gate import ReleaseError
from nexa_core.release.provenance import code_version, find_record, trace_lineage
from nexa_core.release.records import DISTILLED_LINE, commit_release, release_record, release_row, release_summary
from nexa_core.settings import from_settings
from nexa_core.tables import CHECKPOINT_HISTORY, DISTILLED_RELEASE, SFT_DATASET, TEACHER_LOGITS
from resources.delta import PROJECT_ROOT, DeltaStore
from resources.launcher import TrainingLauncher
from resources.tracking import MlflowTracking

DistilledGateSettings = settings_class(DistilledGateConfig, "DistilledGateSettings")


@dg.asset(
    partitions_def=domain_partitions,
    group_name=GROUP,
    metadata=DELTA_PARTITION,
    code_version="1",
    deps=[CHECKPOINT_HISTORY],
    output_required=False,
    kinds={"mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            "distilled_gate",
            asset=DISTILLED_RELEASE,
            blocking=True,
            description="The distilled student beats the off-the-shelf base (by default: 95% intervals apart) and "
            "keeps at least min_kept of its teacher's mean, on suite accuracy (else test token F1). A refused "
            "student changes nothing; the domain's champion is never touched.",
        )
    ],
)
def distilled_release(
    context: dg.AssetExecutionContext,
    config: DistilledGateSettings,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    tracking: MlflowTracking,
    student_distilled: pl.DataFrame,
    distilled_scores: pl.DataFrame,
):
    """The domain's distilled student, once it passes its gate: merged with its tokenizer and a model card,
    registered as a new version of <model>-distilled in MLflow, the alias `champion` moved to it."""
    domain = context.partition_key
    if student_distilled.is_empty() or distilled_scores.is_empty():
        raise dg.Failure(f"partition {domain}: materialize student_distilled and distilled_scores first")
    distilled = student_distilled.row(0, named=True)
    candidate = distilled["distilled_id"]
    scores = distilled_scores.filter(pl.col("distilled_id") == candidate)
    if scores.is_empty():
        raise dg.Failure(f"partition {domain}: distilled_scores holds no scores of {candidate}; materialize it")
    try:
        decision = distilled_gate(from_settings(DistilledGateConfig, config), scores)
    except ReleaseError as exc:
        raise dg.Failure(f"partition {domain}: {exc}") from exc
    previous = tracking.champion_version(domain, DISTILLED_LINE)
    name = tracking.registered_model(domain, DISTILLED_LINE)
    if previous is not None and release_record(delta.tables(), domain, previous, name)["checkpoint_id"] == candidate:
        description = f"partition {domain}: {candidate} is already the champion of {name} (v{previous})"
        yield dg.AssetCheckResult(check_name="distilled_gate", passed=True, description=description)
        return
    if decision.passed:
        yield from release_distilled(context, distilled, scores, decision, previous, delta, launcher, tracking)
    else:
        context.log.warning(f"partition {domain}: distilled student {candidate} {decision.description()}")
    yield dg.AssetCheckResult(
        check_name="distilled_gate",
        passed=decision.passed,
        metadata=decision.metadata(),
        description=f"partition {domain}: distilled student {candidate} {decision.description()}",
    )


def release_distilled(context, distilled, scores, decision, previous, delta, launcher, tracking):
    """Merge and register where the weights are, write the card, record the release, then move the alias."""
    domain, candidate = context.partition_key, distilled["distilled_id"]
    teacher = find_record(delta.tables(), CHECKPOINT_HISTORY, "checkpoint_id", distilled["teacher_id"])
    if teacher is None:
        raise dg.Failure(f"partition {domain}: teacher {distilled['teacher_id']} is not in {CHECKPOINT_HISTORY}")
    target = tracking.registry_target(domain, DISTILLED_LINE)
    merged = merged_release(context, domain, candidate, distilled["model_uri"], launcher, target)
    summary = release_summary(domain, merged)
    code = code_version(PROJECT_ROOT)
    card = distilled_card(summary, distilled, decision, scores, code)
    files = commit_release(merged, summary["merged_uri"], card, {"checkpoint_id": candidate, "domain": domain})
    lineage = trace_lineage(
        lambda table, version: recorded_where(context.instance, table, domain, "delta_version", version),
        [(SFT_DATASET, distilled["sft_version"]), (TEACHER_LOGITS, distilled["logits_version"])],
    )
    checkpoint, costs = distilled_checkpoint(distilled, teacher), distilled_costs(distilled)
    row = release_row(summary, checkpoint, decision, files, lineage, costs, code, card, merged["mlflow_run_id"])
    reads = (CHECKPOINT_HISTORY, TEACHER_LOGITS, "student_distilled", "distilled_scores")
    yield from published(context, row | {"previous_champion": previous}, delta, tracking, reads)


distilled_release_job = dg.define_asset_job(
    "distilled_release_job",
    selection=dg.AssetSelection.assets(distilled_release),
    description="Release a domain's distilled student as <model>-distilled if it passes its gate: merge, register, "
    "model card (kd_job makes and scores it).",
)
