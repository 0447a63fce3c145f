"""A distilled student beside its teacher and the same pruned copy trained by SFT alone: the lift-table metrics
of the test split and the suites (nexa_core.metric_registry: token F1 and contains, accuracy and acc_norm), each
with its 95% bootstrap interval, and each model's size and generation speed: the rows of distilled_scores (the
leaderboard renders them, distilled_markdown)."""

from __future__ import annotations

import polars as pl

from nexa_core.evaluate.benchmark import ALL_SUITES, summarize
from nexa_core.evaluate.metrics import ALL_TOPICS, aggregate, score_items
from nexa_core.metric_registry import SUITES, TEST, lift_measures
from nexa_core.schemas import DISTILLED_SCORES

SCORED_ROLES = ("student", "pruned_sft", "teacher", "base")  # the distilled student first, its yardsticks after


def generation_speed(predictions: pl.DataFrame, seconds: dict[str, float]) -> dict[str, float]:
    """New tokens per second of each role's answers to the test split (where no fixed-length decode was timed:
    it favours a model that answers at length)."""
    tokens = predictions.group_by("model_role").agg(pl.col("new_tokens").sum())
    return {role: n / seconds[role] for role, n in tokens.iter_rows() if seconds.get(role)}


def distilled_summary(
    predictions: pl.DataFrame,
    items: pl.DataFrame | None,
    speed: dict[str, float],
    parameters: dict[str, int],
    confidence: float = 0.95,
    n_resamples: int = 2000,
) -> pl.DataFrame:
    """One row per role, source and metric over all topics (and all suites), with each role's size and its
    new tokens/s (`speed`); `items` None when the domain has no suites."""
    keys = ["model_role", "metric", "mean", "ci_low", "ci_high", "n"]
    shown = {source: [m.name for s, m in lift_measures() if s == source] for source in (TEST, SUITES)}
    test = aggregate(score_items(predictions), shown[TEST], ["model_role"], confidence, n_resamples)
    parts = [test.filter(pl.col("topic") == ALL_TOPICS).select(keys).with_columns(source=pl.lit(TEST))]
    if items is not None and not items.is_empty():
        suites = summarize(items, ["model_role"], confidence, n_resamples)
        overall = (pl.col("suite") == ALL_SUITES) & (pl.col("topic") == ALL_TOPICS)
        parts.append(
            suites.filter(overall & pl.col("metric").is_in(shown[SUITES]))
            .select(keys)
            .with_columns(source=pl.lit(SUITES))
        )
    rows = pl.concat(parts).with_columns(
        parameters=pl.col("model_role").replace_strict(parameters, default=None, return_dtype=pl.Int64),
        new_tokens_per_s=pl.col("model_role").replace_strict(speed, default=None, return_dtype=pl.Float64),
    )
    order = {role: i for i, role in enumerate(SCORED_ROLES)}
    return (
        rows.select(list(DISTILLED_SCORES))
        .cast(DISTILLED_SCORES)
        .sort(pl.col("model_role").replace_strict(order, default=len(order)), "source", "metric")
    )


def _row(summary: pl.DataFrame, role: str, source: str, metric: str) -> dict | None:
    rows = summary.filter((pl.col("model_role") == role) & (pl.col("source") == source) & (pl.col("metric") == metric))
    return rows.row(0, named=True) if rows.height else None


def apart(a: dict | None, b: dict | None) -> str:
    """'above' when a's interval lies entirely above b's, 'below' when entirely under, else 'overlap'."""
    if a is None or b is None:
        return "–"
    return "above" if a["ci_low"] > b["ci_high"] else "below" if a["ci_high"] < b["ci_low"] else "overlap"


def distilled_verdicts(summary: pl.DataFrame) -> dict[str, float | str]:
    """The targets' figures: per metric, the share of the teacher's score the student keeps and whether its
    interval lies above the SFT-only copy's and the base's; the speed-up and the size against the teacher."""
    out: dict[str, float | str] = {}
    for source, metric in summary.select("source", "metric").unique(maintain_order=True).iter_rows():
        student, teacher = _row(summary, "student", source, metric), _row(summary, "teacher", source, metric)
        if student is None:
            continue
        if teacher and teacher["mean"]:
            out[f"{metric}/kept_of_teacher"] = student["mean"] / teacher["mean"]
        out[f"{metric}/vs_pruned_sft"] = apart(student, _row(summary, "pruned_sft", source, metric))
        out[f"{metric}/vs_base"] = apart(student, _row(summary, "base", source, metric))
    first = {r["model_role"]: r for r in summary.unique("model_role", keep="first").iter_rows(named=True)}
    if "student" in first and "teacher" in first:
        s, t = first["student"], first["teacher"]
        if s["new_tokens_per_s"] and t["new_tokens_per_s"]:
            out["speedup"] = s["new_tokens_per_s"] / t["new_tokens_per_s"]
        if s["parameters"] and t["parameters"]:
            out["size_ratio"] = s["parameters"] / t["parameters"]
    return out
