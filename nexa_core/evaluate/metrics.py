"""Eval scores: per-item scores by the registry's scorers (nexa_core.metric_registry: SQuAD exact match and
token F1, ROUGE-L, contains, ...) and their per-group aggregates with bootstrap confidence intervals, the rows
of eval_history and benchmark_history."""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.stats import bootstrap

from nexa_core import metric_registry
from nexa_core.metric_registry import JUDGE, TEST

ALL_TOPICS = "__all__"
AGGREGATE = {"mean": np.mean}  # by the name a metric declares (the histories' `mean` column holds it)


def eval_metric_names(judged: bool) -> list[str]:
    """The metrics eval_metrics aggregates: the test split's, the judge's only when a judge is configured."""
    return [m.name for m in metric_registry.of(TEST) if judged or m.given_by != JUDGE]


def score_items(frame: pl.DataFrame, source: str = TEST) -> pl.DataFrame:
    """`frame` with a column per metric of `source` that has a scorer, of prediction against reference (a
    missing text scored as empty)."""
    scored = [m for m in metric_registry.of(source) if m.score]
    pairs = list(zip((p or "" for p in frame["prediction"]), (r or "" for r in frame["reference"])))
    # torchmetrics computes in float32: digits past the 6th decimal are noise
    return frame.with_columns(
        pl.Series(m.name, [m.score(p, r) for p, r in pairs], dtype=pl.Float64).round(6) for m in scored
    )


def _mean_ci(values: np.ndarray, metric: str, confidence: float, n_resamples: int, seed: int) -> dict:
    """The metric's aggregate of the values and its interval."""
    if values.size == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    declared = metric_registry.get(metric)
    statistic = AGGREGATE[declared.aggregation]
    mean = float(statistic(values))
    if np.ptp(values) == 0:  # one value or all equal: nothing to resample (scipy warns and gives NaN)
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": values.size}
    # declared.interval is "bootstrap", the one the registry allows: percentile, at `confidence`.
    # A fresh generator per group: a group's interval does not depend on which other groups exist
    ci = bootstrap(
        (values,),
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return {"mean": mean, "ci_low": float(ci.low), "ci_high": float(ci.high), "n": values.size}


def aggregate(
    scores: pl.DataFrame,
    metrics: list[str],
    by: list[str],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pl.DataFrame:
    """Each metric's aggregate (as the registry declares it) and its bootstrap percentile interval per group of
    `by`, per topic and over all topics ("__all__"). Null scores (a judge answer that could not be parsed) are
    left out, never counted as 0; `n` counts the values used."""
    values = (pl.col(m).cast(pl.Float64).fill_nan(None) for m in metrics)  # NaN is no score either
    long = scores.select(*by, pl.col("topic").cast(pl.String), *values).unpivot(
        on=metrics, index=[*by, "topic"], variable_name="metric", value_name="value"
    )
    groups = (
        pl.concat([long, long.with_columns(topic=pl.lit(ALL_TOPICS))])
        .group_by([*by, "topic", "metric"])
        .agg(pl.col("value").drop_nulls())
    )
    # Sorted values: the resamples, so the interval, must not depend on the order rows were read in
    rows = [
        {
            **{k: v for k, v in row.items() if k != "value"},
            **_mean_ci(np.sort(np.asarray(row["value"], dtype=float)), row["metric"], confidence, n_resamples, seed),
        }
        for row in groups.iter_rows(named=True)
    ]
    schema = {
        **{c: scores.schema[c] for c in by},
        "topic": pl.String,
        "metric": pl.String,
        "mean": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "n": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema).sort([*by, "topic", "metric"])


def headline_numbers(summary: pl.DataFrame) -> dict[str, float]:
    """From an `aggregate` summary: each role's mean of each metric over all topics with its interval
    (`student/token_f1`, `student/token_f1_ci_low`, `..._ci_high`) and the student's lift over its base
    (`lift/token_f1`), as flat numbers the UI plots over materializations. A metric nothing was
    scored on (mean null) is left out."""
    overall = {
        (r["model_role"], r["metric"]): r
        for r in summary.filter(pl.col("topic") == ALL_TOPICS).iter_rows(named=True)
        if r["mean"] is not None
    }
    numbers = {}
    for (role, metric), r in sorted(overall.items()):
        numbers |= {
            f"{role}/{metric}": r["mean"],
            f"{role}/{metric}_ci_low": r["ci_low"],
            f"{role}/{metric}_ci_high": r["ci_high"],
        }
    for (role, metric), r in sorted(overall.items()):
        if role == "student" and ("base", metric) in overall:
            numbers[f"lift/{metric}"] = r["mean"] - overall[("base", metric)]["mean"]
    return numbers
