"""model_release: the domain's newest evaluated checkpoint, promoted only through a blocking gate (it
must beat its base and the current champion), merged into full weights, registered in the MLflow Model
Registry under the alias `champion`, with a model card. `deployment` is what nexa-serve records when it
serves a champion or a distilled release (nexa_assets/release_cli.py)."""

from pathlib import Path

import dagster as dg
import polars as pl

from nexa_assets.benchmark import SUITE_ROOT
from nexa_assets.metadata import recorded_where, versions_read
from nexa_assets.partitions import DELTA_PARTITION, domain_partitions
from nexa_assets.settings import settings_class
from nexa_assets.side_tables import append_side_table, side_table_spec
from nexa_core import schemas
from nexa_core.evaluate.benchmark import SuiteError, load_suites
from nexa_core.release.card import metric_rows, model_card
from nexa_core.release.gate import (
    GateConfig,
    GateDecision,
    ReleaseError,
    benchmarked,
    gate_metric,
    newest_evaluated,
    promotion_gate,
    score_of,
)
from nexa_core.release.provenance import code_version, find_record, trace_lineage
from nexa_core.release.records import (
    checkpoint_rubrics,
    commit_release,
    release_costs,
    release_record,
    release_row,
    release_summary,
)
from nexa_core.settings import from_settings
from nexa_core.stage import MergeRequest
from nexa_core.tables import (
    BENCHMARK_HISTORY,
    BENCHMARK_SCORES,
    CHECKPOINT_HISTORY,
    DEPLOYMENT,
    DISTILLED_RELEASE,
    EVAL_HISTORY,
    EVAL_METRICS,
    MODEL_RELEASE,
    RAW_DOCUMENTS,
    RELEASE_HISTORY,
    SFT_DATASET,
    STUDENT_BASE,
)
from resources.delta import PROJECT_ROOT, DeltaStore
from resources.launcher import TrainingLauncher
from resources.tracking import CHAMPION, MlflowTracking

GROUP = "release"
RELEASE_READS = (EVAL_HISTORY, BENCHMARK_HISTORY, CHECKPOINT_HISTORY, STUDENT_BASE, EVAL_METRICS)
release_history = side_table_spec(RELEASE_HISTORY, GROUP)


# suite_root: a domain with suites must be benchmarked before its release
class ReleaseSettings(settings_class(GateConfig, "GateFields", suite_root=(str, SUITE_ROOT))):
    def gate_config(self) -> GateConfig:
        return from_settings(GateConfig, self)


def domain_rows(delta: DeltaStore, table: str, domain: str) -> pl.DataFrame | None:
    return delta.read_partition(table, domain) if delta.exists(table) else None


def judged_metric(
    config: ReleaseSettings, domain: str, candidate: str, history: pl.DataFrame, benchmarks: pl.DataFrame | None
) -> str:
    """The gate's metric; a domain with benchmark suites is judged on them, so they must have been run."""
    try:
        gate = config.gate_config()
        if (
            config.metric == "auto"
            and not benchmarked(benchmarks, candidate)
            and load_suites(Path(config.suite_root) / domain, domain)
        ):
            raise dg.Failure(
                f"partition {domain}: checkpoint {candidate} has benchmark suites in "
                f"{Path(config.suite_root) / domain} but no benchmark_scores; materialize "
                f"benchmark_scores for it first"
            )
        return gate_metric(gate, candidate, history, benchmarks)
    except (ReleaseError, SuiteError) as exc:
        raise dg.Failure(f"partition {domain}: {exc}") from exc


@dg.asset(
    partitions_def=domain_partitions,
    group_name=GROUP,
    metadata=DELTA_PARTITION,
    code_version="1",
    deps=[EVAL_METRICS, BENCHMARK_SCORES, EVAL_HISTORY, BENCHMARK_HISTORY, CHECKPOINT_HISTORY, STUDENT_BASE],
    output_required=False,
    kinds={"mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            "promotion_gate",
            asset="model_release",
            blocking=True,
            description="The candidate beats its base and the current champion on the domain's primary metric "
            "(benchmark accuracy where a suite exists, else the test split's), by the configured rule "
            "(by default: 95% intervals not overlapping). A refused candidate changes nothing.",
        )
    ],
)
def model_release(
    context: dg.AssetExecutionContext,
    config: ReleaseSettings,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    tracking: MlflowTracking,
):
    """The domain's champion: its newest evaluated checkpoint once it passes the promotion gate, merged into
    full weights with its tokenizer, chat template and model card, registered as a new version of the
    domain's model in the MLflow Model Registry, the alias `champion` moved to it."""
    domain = context.partition_key
    history = domain_rows(delta, EVAL_HISTORY, domain)
    candidate = newest_evaluated(history, domain) if history is not None else None
    if candidate is None:
        raise dg.Failure(
            f"partition {domain}: no evaluated checkpoint in {EVAL_HISTORY}; materialize eval_metrics "
            f"(and benchmark_scores) for it first"
        )
    benchmarks = domain_rows(delta, BENCHMARK_HISTORY, domain)
    metric = judged_metric(config, domain, candidate, history, benchmarks)
    champion_version = tracking.champion_version(domain)
    champion = None
    if champion_version is not None:
        try:
            champion = release_record(delta.tables(), domain, champion_version, tracking.registered_model(domain))
        except ReleaseError as exc:
            raise dg.Failure(
                f"partition {domain}: the registry's champion is v{champion_version} but: {exc}; "
                f"check that MLflow and the Delta root are the ones that made it"
            ) from exc
        if champion["checkpoint_id"] == candidate:
            yield dg.AssetCheckResult(
                check_name="promotion_gate",
                passed=True,
                metadata={"champion_version": champion_version},
                description=f"partition {domain}: checkpoint {candidate} is already the "
                f"champion (v{champion_version}); nothing to release",
            )
            return
    scores = {role: score_of(candidate, role, metric, history, benchmarks) for role in ("student", "base")}
    decision = promotion_gate(
        config.gate_config(),
        scores["student"],
        scores["base"],
        score_of(champion["checkpoint_id"], "student", metric, history, benchmarks) if champion else None,
        champion_version,
    )
    check = dg.AssetCheckResult(
        check_name="promotion_gate",
        passed=decision.passed,
        metadata=decision.metadata(),
        description=f"partition {domain}: checkpoint {candidate} {decision.description()}",
    )
    if decision.passed:
        yield from release(context, domain, candidate, decision, history, benchmarks, delta, launcher, tracking)
    else:
        context.log.warning(check.description)
    yield check


def merged_release(context, domain: str, candidate: str, folder: str, launcher: TrainingLauncher, target) -> dict:
    """The merge and the registration, launched where training runs (the weights are loaded there, not in this
    process): what merge_checkpoint made and the MLflow version it was registered as."""
    request = MergeRequest(
        domain=domain,
        checkpoint=folder,
        output_dir=f"{launcher.artifact_root.rstrip('/')}/{domain}/release-{candidate}/model",
        registered_model=target.registered_model,
        tracking_uri=target.tracking_uri,
        experiment_id=target.experiment_id,
        checkpoint_id=candidate,
        dagster_run_id=context.run.run_id,
    )
    merged, _ = launcher.run_stage(context, request, {})
    return merged


def release_lineage(instance: dg.DagsterInstance, domain: str, checkpoint: dict, base: dict) -> list[dict]:
    """Every table version the checkpoint came from, walked back from what it was trained and evaluated on
    through what each materialization recorded it read."""

    def recorded(table: str, key: str, value) -> dict | None:
        return recorded_where(instance, table, domain, key, value)

    evaluated = [
        (table, (recorded(table, "checkpoint_id", checkpoint["checkpoint_id"]) or {}).get("delta_version"))
        for table in (EVAL_METRICS, BENCHMARK_SCORES)
    ]
    read_by_training = [(SFT_DATASET, checkpoint["sft_version"]), (RAW_DOCUMENTS, base.get("documents_version"))]
    return trace_lineage(lambda table, v: recorded(table, "delta_version", v), [*read_by_training, *evaluated])


def release(
    context,
    domain: str,
    candidate: str,
    decision: GateDecision,
    history: pl.DataFrame,
    benchmarks: pl.DataFrame | None,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    tracking: MlflowTracking,
):
    """Merge and register, write the card, record the release, then move the alias (last: a crash before it
    leaves the champion as it was)."""
    tables = delta.tables()
    checkpoint = find_record(tables, CHECKPOINT_HISTORY, "checkpoint_id", candidate)
    if checkpoint is None:
        raise dg.Failure(f"partition {domain}: checkpoint {candidate} is evaluated but not in {CHECKPOINT_HISTORY}")
    launcher.check_checkpoint(domain, checkpoint)
    base = find_record(tables, STUDENT_BASE, "base_id", checkpoint["base_id"]) or {}
    target = tracking.registry_target(domain)
    merged = merged_release(context, domain, candidate, checkpoint["artifact_uri"], launcher, target)
    summary = release_summary(domain, merged)
    lineage = release_lineage(context.instance, domain, checkpoint, base)
    costs = release_costs(tables, domain, lineage, base, checkpoint)
    code = code_version(PROJECT_ROOT)
    card = model_card(
        summary,
        checkpoint,
        base,
        decision,
        metric_rows(candidate, history, benchmarks),
        lineage,
        checkpoint_rubrics(domain_rows(delta, EVAL_METRICS, domain), candidate),
        tracking.run_params(checkpoint["mlflow_run_id"]),
        costs,
        code,
    )
    files = commit_release(merged, summary["merged_uri"], card, {"checkpoint_id": candidate, "domain": domain})
    row = release_row(summary, checkpoint, decision, files, lineage, costs, code, card, merged["mlflow_run_id"])
    yield from published(context, row, delta, tracking, RELEASE_READS)


def published(context, row: dict, delta: DeltaStore, tracking: MlflowTracking, reads: tuple[str, ...]):
    """A committed release recorded in release_history, then made the champion of its registered model; `reads`:
    the tables whose versions the metadata records."""
    frame = pl.DataFrame([row], schema=schemas.MODEL_RELEASE)
    history = append_side_table(delta, RELEASE_HISTORY, row["domain"], frame)
    tracking.promote(row)
    context.log.info(
        f"partition {row['domain']}: {row['registered_model']} v{row['model_version']} is the champion "
        f"({row['merged_uri']})"
    )
    yield dg.Output(frame, metadata=release_metadata(row, delta, reads))
    context.log_event(history)


def release_metadata(row: dict, delta: DeltaStore, reads: tuple[str, ...]) -> dict:
    name = row["registered_model"]
    return {
        "registered_model": name,
        "model_version": row["model_version"],
        "mlflow_model_uri": f"models:/{name}@{CHAMPION}",
        "served_model": row["served_model"],
        "merged_uri": dg.MetadataValue.path(row["merged_uri"]),
        "checkpoint_id": row["checkpoint_id"],
        "previous_champion": row["previous_champion"] or 0,
        "metric": row["metric"],
        "score": row["score"],
        "teacher_usd": row["teacher_usd"] or 0.0,
        "gpu_hours": row["gpu_hours"],
        "model_card": dg.MetadataValue.md(row["model_card"]),
        **versions_read(delta, *reads),
    }


deployment = dg.AssetSpec(
    DEPLOYMENT,
    partitions_def=domain_partitions,
    group_name=GROUP,
    deps=[MODEL_RELEASE, DISTILLED_RELEASE],  # by key: distilled_release's module imports this one
    kinds={"openai"},
    description="A served release: recorded by `nexa-serve DOMAIN` (the champion, model_release) or `nexa-serve "
    "DOMAIN --distilled` (distilled_release) when its OpenAI-compatible endpoint answers: endpoint URL, the "
    "release it serves (metadata `release`, a link to that asset), model version, start time; also a row of the "
    "deployment Delta table.",
)

release_job = dg.define_asset_job(
    "release_job",
    selection=dg.AssetSelection.assets("model_release"),
    description="Promote a domain's newest evaluated checkpoint if it passes the gate: merge, register, model card.",
)
