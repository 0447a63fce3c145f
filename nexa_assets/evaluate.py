"""Evaluation and the feedback loop: student checkpoint -> eval_predictions -> eval_metrics ->
feedback_set, and the leaderboard over every checkpoint of every domain.

Generation runs where training runs (the launcher, pool "gpu"); scoring, judging and selection run
here. The feedback set feeds the next round through teacher_inputs, which reads it from Delta: the
graph stays acyclic, and the round-to-round link is in the metadata and the data's round columns.
"""

import json

import dagster as dg
import polars as pl
from pydantic import Field

from nexa_assets.metadata import versions_read
from nexa_assets.partitions import DELTA_PARTITION, LAUNCHED, domain_partitions
from nexa_assets.settings import settings_class, stage_settings
from nexa_assets.side_tables import append_summary, side_table_spec
from nexa_core import schemas
from nexa_core.distill.prompts import load_template
from nexa_core.evaluate.answer_cache import cache_folder
from nexa_core.evaluate.feedback import FeedbackConfig, build_feedback_set, known_questions, primary_metric
from nexa_core.evaluate.judge import (
    apply_judgements,
    judge_parsing,
    judge_requests,
    load_rubric,
    parse_judgement,
    without_judge,
)
from nexa_core.evaluate.leaderboard import (
    distilled_markdown,
    leaderboard_markdown,
    leaderboard_rows,
    previous_round_score,
    rank_checkpoints,
    write_report,
)
from nexa_core.ids import content_id
from nexa_core.recipe import GenerateConfig
from nexa_core.roles import CHECKPOINT_ROLES
from nexa_core.settings import from_settings
from nexa_core.stage import GenerateRequest
from nexa_core.tables import (
    BENCHMARK_HISTORY,
    CHECKPOINT_HISTORY,
    DISTILLED_SCORES,
    EVAL_HISTORY,
    EVAL_METRICS,
    EVAL_PREDICTIONS,
    FEEDBACK_SET,
    FILTERED_PAIRS,
    SFT_DATASET,
    TEACHER_INPUTS,
)
from nexa_core.teacher import CollectionStopped, TeacherLedger, collect_responses
from nexa_core.train.checkpoints import eval_dir
from resources.delta import DeltaStore, table_markdown
from resources.launcher import TrainingLauncher
from resources.reports import ReportFolder
from resources.teacher import TeacherResource

GROUP = "evaluate"
eval_history_spec = side_table_spec(EVAL_HISTORY, GROUP)


LEADERBOARD_REPORT = "leaderboard.html"  # in the reports folder


GenerateSettings = settings_class(
    GenerateConfig,
    "GenerateSettings",
    "The answers' generation settings (nexa_core/configs/generate_default.yaml) and the roles that answer.",
    roles=(
        list[str],
        Field(default=list(CHECKPOINT_ROLES), description="the models that answer (student, read, base)"),
    ),
)


@dg.asset(
    **LAUNCHED,
    group_name=GROUP,
    code_version="1",
    kinds={"pytorch"},
)
def eval_predictions(
    context: dg.AssetExecutionContext,
    config: GenerateSettings,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    student_checkpoint: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Answers of the checkpoint and of its untrained base model on the test split of the SFT set the
    checkpoint was trained on; batched, greedy by default, the generation config recorded."""
    domain = context.partition_key
    if student_checkpoint.is_empty():
        raise dg.Failure(f"partition {domain}: student_checkpoint has no record; materialize it first")
    checkpoint = student_checkpoint.row(0, named=True)
    launcher.check_checkpoint(domain, checkpoint)
    generation = stage_settings(GenerateConfig, config)
    out_dir = eval_dir(checkpoint["artifact_uri"])
    output = (
        f"{out_dir}/predictions-{content_id(checkpoint['checkpoint_id'], generation.to_dict(), config.roles)}.parquet"
    )
    request = GenerateRequest(
        domain=domain,
        adapter=checkpoint["artifact_uri"],
        sft_uri=delta.uri(SFT_DATASET),
        sft_version=checkpoint["sft_version"],
        output=output,
        roles=list(config.roles),
        expect_sha256=checkpoint["files_sha256"],
        overrides=generation.changes(),
        answer_cache=cache_folder(launcher.artifact_root),
    )
    summary, _ = launcher.run_stage(context, request, dict(delta.storage_options or {}))
    predictions = schemas.conform(
        pl.read_parquet(output).with_columns(
            domain=pl.lit(domain),
            round=pl.lit(checkpoint["round"]),
            checkpoint_id=pl.lit(checkpoint["checkpoint_id"]),
            sft_version=pl.lit(checkpoint["sft_version"]),
            generation_config=pl.lit(json.dumps(generation.to_dict())),
        ),
        schemas.EVAL_PREDICTIONS,
    )
    return dg.Output(
        predictions,
        metadata={
            "checkpoint_id": checkpoint["checkpoint_id"],
            "round": checkpoint["round"],
            "sft_version": checkpoint["sft_version"],
            "examples": summary["examples"],
            "device": summary["device"],
            **{f"seconds/{role}": s for role, s in summary["seconds"].items()},
            "cached_roles": ", ".join(summary.get("cached_roles", [])) or "none",  # read back from the answer cache
            "generation_config": dg.MetadataValue.json(generation.to_dict()),
            "predictions_file": output,
        },
    )


class MetricSettings(dg.Config):
    rubric: str = "qa_correctness_v1"  # nexa_core/rubrics/<name>.yaml
    confidence: float = 0.95
    n_resamples: int = 2000
    min_judge_parse_rate: float = 0.9


def judged(
    context, domain: str, predictions: pl.DataFrame, judge: TeacherResource, delta: DeltaStore, rubric_name: str
) -> pl.DataFrame:
    """Judge every prediction through the teacher's collector: same cache, retries, budget and recovery."""
    if judge.backend == "none":
        return without_judge(predictions)
    rubric = load_rubric(rubric_name)
    requests = judge_requests(predictions, rubric)
    try:
        outputs, stats = collect_responses(
            requests,
            judge.client(),
            TeacherLedger(delta.tables(), domain),
            params=judge.params(),
            pricing=judge.pricing(),
            policy=judge.policy(),
            validate=lambda text: parse_judgement(text, rubric),
            log=context.log.info,
        )
    except CollectionStopped as exc:
        raise dg.Failure(f"partition {domain}: judging stopped: {exc}") from exc
    context.log.info(
        f"partition {domain}: judge {judge.model}: {stats.new_calls} new judgements, "
        f"{stats.cache_hits} cached, ${stats.cost_usd:.4f}"
    )
    return apply_judgements(predictions, requests, outputs, rubric, judge.model)


@dg.asset(
    partitions_def=domain_partitions,
    group_name=GROUP,
    metadata=DELTA_PARTITION,
    code_version="1",
    check_specs=[
        dg.AssetCheckSpec(
            "judge_parsed",
            asset="eval_metrics",
            description="Share of judged items whose judgement parsed; an unparseable "
            "one is recorded as such, never scored",
        )
    ],
)
def eval_metrics(
    context: dg.AssetExecutionContext,
    config: MetricSettings,
    delta: DeltaStore,
    judge: TeacherResource,
    eval_predictions: pl.DataFrame,
):
    """Per-item exact match, token F1, ROUGE-L and rubric judge scores; aggregates per domain and
    topic with bootstrap intervals go to eval_history and to numeric metadata (plotted by the UI)."""
    # torchmetrics: a slow import
    from nexa_core.evaluate.metrics import ALL_TOPICS, aggregate, eval_metric_names, headline_numbers, score_items

    domain = context.partition_key
    if eval_predictions.is_empty():
        raise dg.Failure(f"partition {domain}: eval_predictions is empty; nothing to score")
    scores = schemas.conform(
        judged(context, domain, score_items(eval_predictions), judge, delta, config.rubric), schemas.EVAL_SCORES
    )
    summary = aggregate(
        scores,
        eval_metric_names(judged=judge.backend != "none"),
        by=["domain", "round", "checkpoint_id", "sft_version", "model_role"],
        confidence=config.confidence,
        n_resamples=config.n_resamples,
    )
    history = append_summary(delta, EVAL_HISTORY, domain, summary)
    main_metric = primary_metric(scores)
    by_topic = (
        summary.filter((pl.col("metric") == main_metric) & (pl.col("topic") != ALL_TOPICS))
        .pivot("model_role", index="topic", values="mean")
        .sort("topic")
    )
    parsed, check = judge_parsed(context, domain, scores, config.min_judge_parse_rate)
    yield dg.Output(
        scores,
        metadata={
            **headline_numbers(summary),
            "round": int(scores["round"][0]),
            "checkpoint_id": scores["checkpoint_id"][0],
            "primary_metric": main_metric,
            "judge": judge.model if judge.backend != "none" else "not configured",
            **parsed,
            "by_topic": dg.MetadataValue.md(table_markdown(by_topic, rows=by_topic.height)),
            **versions_read(delta, EVAL_PREDICTIONS),
        },
    )
    context.log_event(history)
    yield check


def judge_parsed(context, domain: str, scores: pl.DataFrame, min_rate: float) -> tuple[dict, dg.AssetCheckResult]:
    """(the judged and unparseable counts, the judge_parsed check); the first unparseable judgements logged."""
    judged_items, unparseable, parse_rate = judge_parsing(scores)
    for row in unparseable.head(3).iter_rows(named=True):
        context.log.warning(
            f"partition {domain}: judgement of example {row['example_id']} ({row['model_role']}) "
            f"{row['judge_status']}: {str(row['judge_raw'])[:160]!r}"
        )
    example = (
        f" (e.g. example {unparseable['example_id'][0]}: {str(unparseable['judge_raw'][0])[:120]!r})"
        if unparseable.height
        else ""
    )
    check = dg.AssetCheckResult(
        check_name="judge_parsed",
        passed=parse_rate >= min_rate,
        description=f"partition {domain}: {unparseable.height} of {judged_items.height} judgements unparseable"
        + example,
        metadata={"parse_rate": parse_rate, "unparseable": unparseable.height},
    )
    return {"judged": judged_items.height, "judge_unparseable": unparseable.height}, check


def eval_history(delta: DeltaStore, domain: str | None = None) -> pl.DataFrame:
    """The eval_history table (one domain's rows, or every domain's), empty before any evaluation."""
    if not delta.exists(EVAL_HISTORY):
        return schemas.empty(schemas.EVAL_HISTORY)
    history = delta.scan(EVAL_HISTORY)
    return (history.filter(pl.col("domain") == domain) if domain else history).collect()


@dg.asset(
    group_name=GROUP,
    deps=[EVAL_METRICS, "benchmark_scores", EVAL_HISTORY, BENCHMARK_HISTORY, DISTILLED_SCORES],
    code_version="1",
    kinds={"delta", "html"},
)
def leaderboard(context: dg.AssetExecutionContext, delta: DeltaStore, reports: ReportFolder) -> dg.Output[pl.DataFrame]:
    """Every checkpoint of every domain, ranked on its primary metric, with its benchmark-suite
    accuracy beside its base's, each domain's distilled student beside its teacher, and an HTML report."""
    history = eval_history(delta)
    benchmarks = delta.scan(BENCHMARK_HISTORY).collect() if delta.exists(BENCHMARK_HISTORY) else None
    distilled = delta.scan(DISTILLED_SCORES).collect() if delta.exists(DISTILLED_SCORES) else None
    trained = delta.scan(CHECKPOINT_HISTORY).collect() if delta.exists(CHECKPOINT_HISTORY) else None
    ranked = rank_checkpoints(history, benchmarks, trained)  # with each checkpoint's tokens/s and MFU
    report = write_report(history, ranked, reports.path(LEADERBOARD_REPORT), benchmarks, distilled)
    best = ranked.group_by("domain").agg(pl.col("score").max()).sort("domain") if ranked.height else ranked
    return dg.Output(
        ranked,
        metadata={
            "leaderboard": dg.MetadataValue.md(leaderboard_markdown(ranked)),
            "rows": dg.MetadataValue.json(leaderboard_rows(ranked)),
            "report": dg.MetadataValue.path(str(report)),
            "checkpoints": ranked.height,
            **{f"best/{d}": s for d, s in best.select("domain", "score").iter_rows()},
            **({"smaller_students": dg.MetadataValue.md(smaller_students(distilled))} if distilled is not None else {}),
            **versions_read(delta, EVAL_HISTORY, BENCHMARK_HISTORY),
        },
    )


def smaller_students(distilled: pl.DataFrame) -> str:
    return "\n\n".join(
        f"**{domain}**\n\n{distilled_markdown(rows)}"
        for (domain,), rows in distilled.sort("domain").group_by("domain", maintain_order=True)
    )


FeedbackSettings = settings_class(FeedbackConfig, "FeedbackSettings", template=(str, "feedback_v1"))


# It reads the round's SFT set, the passages and the known questions from Delta: declared, so the lineage
# shows them (teacher_inputs reads the feedback set back the same way, undeclared: that edge would be a cycle).
@dg.asset(
    partitions_def=domain_partitions,
    group_name=GROUP,
    metadata=DELTA_PARTITION,
    code_version="1",
    deps=[SFT_DATASET, TEACHER_INPUTS, FILTERED_PAIRS, EVAL_HISTORY],
)
def feedback_set(
    context: dg.AssetExecutionContext, config: FeedbackSettings, delta: DeltaStore, eval_metrics: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    """The weak topics and failed items of this round, as new teacher inputs aimed at them (passages
    of the weak topics from train documents), each row with its reason. The next round mixes it in."""
    domain = context.partition_key
    student = eval_metrics.filter(pl.col("model_role") == "student")
    if student.is_empty():
        raise dg.Failure(f"partition {domain}: eval_metrics has no student rows; nothing to learn from")
    round_, sft_version = int(student["round"][0]), int(student["sft_version"][0])
    sft = delta.scan(SFT_DATASET, sft_version).filter(pl.col("domain") == domain).collect()
    corpus = delta.read_partition(TEACHER_INPUTS, domain).filter(pl.col("feedback_round").is_null())
    exists = delta.exists(FEEDBACK_SET)
    previous = delta.read_partition(FEEDBACK_SET, domain) if exists else schemas.empty(schemas.FEEDBACK_SET)
    known = known_questions(delta.read_partition(FILTERED_PAIRS, domain))
    rows, summary = build_feedback_set(
        student,
        corpus,
        set(sft.filter(pl.col("split") == "train")["doc_id"]),
        known,
        previous,
        load_template(config.template),
        round_,
        from_settings(FeedbackConfig, config),
    )
    score = student[summary["metric"]].mean()
    before = previous_round_score(eval_history(delta, domain), domain, round_, summary["metric"])
    for reason in rows.filter(pl.col("round") == round_)["reason"].unique().sort():
        context.log.info(f"partition {domain}: {reason}")
    return dg.Output(
        rows,
        metadata={
            "round": round_,
            "new_requests": summary["new_requests"],
            "carried_requests": summary["carried_requests"],
            "metric": summary["metric"],
            "score": score,
            **({"previous_score": before} if before is not None else {}),
            "weak_topics": dg.MetadataValue.json(summary["weak_topics"]),
            "topic_scores": dg.MetadataValue.json(summary["topic_scores"]),
            "failed_items": summary["failed_items"],
            "failed_examples": dg.MetadataValue.json(summary["failed_examples"]),
            "weak_topics_without_train_passages": dg.MetadataValue.json(summary["weak_topics_without_train_passages"]),
            **versions_read(delta, EVAL_METRICS, TEACHER_INPUTS, SFT_DATASET, FILTERED_PAIRS, EVAL_HISTORY),
        },
    )


EVAL_ASSETS = [eval_predictions, eval_metrics, eval_history_spec, leaderboard, feedback_set]
