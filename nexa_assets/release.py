"""model_release: the domain's newest evaluated checkpoint, promoted only through a blocking gate (it
must beat its base and the current champion), merged into full weights, registered in the MLflow Model
Registry under the alias `champion`, with a model card. `deployment` is what nexa-serve records when it
serves a champion (nexa_assets/release_cli.py)."""

import json
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl

from nexa_assets.benchmark import BenchmarkSettings
from nexa_assets.evaluate import EVAL_HISTORY
from nexa_assets.metadata import recorded_where, versions_read
from nexa_assets.partitions import DELTA_PARTITION, domain_partitions
from nexa_core import schemas
from nexa_core.benchmark import HISTORY_TABLE as BENCHMARK_HISTORY
from nexa_core.benchmark import SuiteError, load_suites
from nexa_core.ids import content_id
from nexa_core.release import (
    RELEASE_HISTORY,
    GateConfig,
    GateDecision,
    ReleaseError,
    benchmarked,
    code_version,
    commit_release,
    find_record,
    gate_metric,
    lineage_version,
    loggable_model,
    merge_checkpoint,
    metric_rows,
    model_card,
    newest_evaluated,
    promotion_gate,
    release_record,
    score_of,
    teacher_cost,
    trace_lineage,
)
from nexa_core.settings import from_settings
from resources.delta import PROJECT_ROOT, DeltaStore
from resources.launcher import TrainingLauncher
from resources.tracking import CHAMPION, MlflowTracking

GROUP = "release"
CHECKPOINT_HISTORY = "checkpoint_history"
_GATE = GateConfig()


class ReleaseSettings(dg.Config):
    # the fields of nexa_core.release.GateConfig, same names and defaults
    metric: str = _GATE.metric  # auto: benchmark accuracy when the checkpoint was benchmarked, else the test split's
    rule: str = _GATE.rule  # intervals (non-overlapping 95% intervals) or mean
    min_lift_over_base: float = _GATE.min_lift_over_base
    min_lift_over_champion: float = _GATE.min_lift_over_champion
    suite_root: str = BenchmarkSettings.model_fields["suite_root"].default  # a domain with suites must be benchmarked

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
    deps=["eval_metrics", "benchmark_scores"],
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
            champion = release_record(delta.tables(), domain, champion_version)
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
    """Merge, register, write the card, record the release, then move the alias (last: a crash before it
    leaves the champion as it was)."""
    tables = delta.tables()
    checkpoint = find_record(tables, CHECKPOINT_HISTORY, "checkpoint_id", candidate)
    if checkpoint is None:
        raise dg.Failure(f"partition {domain}: checkpoint {candidate} is evaluated but not in {CHECKPOINT_HISTORY}")
    launcher.check_checkpoint(domain, checkpoint)
    base = find_record(tables, "student_base", "base_id", checkpoint["base_id"]) or {}
    merged_uri = f"{launcher.artifact_root.rstrip('/')}/{domain}/release-{candidate}/model"
    try:  # the merge runs here: the checkpoint's files must be on this machine
        merged = merge_checkpoint(checkpoint["artifact_uri"], merged_uri)
    except (OSError, ValueError) as exc:
        raise dg.Failure(
            f"partition {domain}: could not merge checkpoint {candidate} ({checkpoint['artifact_uri']}): {exc}"
        ) from exc
    components, base_path = loggable_model(merged)
    tags = {"domain": domain, "checkpoint_id": candidate, "dagster_run_id": context.run.run_id}
    name, version, run_id = tracking.register_release(domain, components, base_path, tags)

    def recorded(table: str, key: str, value) -> dict | None:
        return recorded_where(context.instance, table, domain, key, value)

    evaluated = [
        (table, (recorded(table, "checkpoint_id", candidate) or {}).get("delta_version"))
        for table in ("eval_metrics", "benchmark_scores")
    ]
    read_by_training = [("sft_dataset", checkpoint["sft_version"]), ("raw_documents", base.get("documents_version"))]
    lineage = trace_lineage(lambda table, v: recorded(table, "delta_version", v), [*read_by_training, *evaluated])
    teacher_version = lineage_version(lineage, "teacher_outputs")
    costs = {
        "teacher_usd": teacher_cost(tables, domain, teacher_version),
        "teacher_outputs_version": teacher_version,
        "gpu_hours": ((base.get("gpu_seconds") or 0.0) + checkpoint["gpu_seconds"]) / 3600,
        "wall_hours": ((base.get("wall_seconds") or 0.0) + checkpoint["wall_seconds"]) / 3600,
    }
    scores = domain_rows(delta, "eval_metrics", domain)
    rubrics = (
        (
            scores.filter((pl.col("checkpoint_id") == candidate) & pl.col("rubric_sha256").is_not_null())
            .select("rubric", "rubric_sha256")
            .unique()
            .sort("rubric")
            .to_dicts()
        )
        if scores is not None
        else []
    )
    released_at = datetime.now(timezone.utc)
    summary = {
        "domain": domain,
        "registered_model": name,
        "model_version": version,
        "served_model": f"{name}-v{version}",
        "merged_uri": merged_uri,
        "weights_sha256": merged["files"],
        "released_at": released_at,
    }
    code = code_version(PROJECT_ROOT)
    card = model_card(
        summary,
        checkpoint,
        base,
        decision,
        metric_rows(candidate, history, benchmarks),
        lineage,
        rubrics,
        tracking.run_params(checkpoint["mlflow_run_id"]),
        costs,
        code,
    )
    files = commit_release(
        merged,
        merged_uri,
        card,
        {
            "domain": domain,
            "checkpoint_id": candidate,
            "registered_model": name,
            "model_version": version,
            "merged_from": merged["merged_from"],
            "base_model_path": merged["base_model_path"],
        },
    )
    row = {
        **{
            k: summary[k]
            for k in ("domain", "registered_model", "model_version", "served_model", "merged_uri", "released_at")
        },
        "release_id": content_id(domain, name, version, candidate),
        "checkpoint_id": candidate,
        **{k: checkpoint[k] for k in ("round", "sft_version", "base_id", "base_model", "finetune")},
        "files_sha256": json.dumps(files, sort_keys=True),
        "metric": decision.metric,
        "score": decision.candidate.mean,
        "ci_low": decision.candidate.ci_low,
        "ci_high": decision.candidate.ci_high,
        "base_score": decision.base.mean,
        "previous_champion": decision.champion_version,
        "gate": json.dumps({**decision.metadata(), "reasons": decision.reasons}),
        "lineage": json.dumps(lineage, default=str),
        "teacher_usd": costs["teacher_usd"],
        "gpu_hours": costs["gpu_hours"],
        "code_version": code,
        "model_card": card,
        "mlflow_run_id": run_id,
    }
    frame = pl.DataFrame([row], schema=schemas.MODEL_RELEASE)
    delta.append(RELEASE_HISTORY, frame)
    tracking.promote(
        domain,
        version,
        run_id,
        card,
        {
            "release_id": row["release_id"],
            "checkpoint_id": candidate,
            "merged_uri": merged_uri,
            "served_model": row["served_model"],
        },
    )
    context.log.info(f"partition {domain}: {name} v{version} is the champion ({merged_uri})")
    yield dg.Output(
        frame,
        metadata={
            "registered_model": name,
            "model_version": version,
            "mlflow_model_uri": f"models:/{name}@{CHAMPION}",
            "served_model": row["served_model"],
            "merged_uri": dg.MetadataValue.path(merged_uri),
            "checkpoint_id": candidate,
            "previous_champion": decision.champion_version or 0,
            "metric": decision.metric,
            "score": decision.candidate.mean,
            "teacher_usd": costs["teacher_usd"] or 0.0,
            "gpu_hours": costs["gpu_hours"],
            "model_card": dg.MetadataValue.md(card),
            **versions_read(delta, EVAL_HISTORY, BENCHMARK_HISTORY, CHECKPOINT_HISTORY, "student_base", "eval_metrics"),
        },
    )


deployment = dg.AssetSpec(
    "deployment",
    partitions_def=domain_partitions,
    group_name=GROUP,
    deps=["model_release"],
    kinds={"openai"},
    description="A served champion: recorded by `nexa-serve DOMAIN` when its OpenAI-compatible endpoint answers "
    "(endpoint URL, model version, start time; also a row of the deployment Delta table).",
)

release_job = dg.define_asset_job(
    "release_job",
    selection=dg.AssetSelection.assets("model_release"),
    description="Promote a domain's newest evaluated checkpoint if it passes the gate: merge, register, model card.",
)
