"""Eval scores: heuristic per-item scores from torchmetrics (SQuAD exact match and token F1, ROUGE-L)
and their per-group means with bootstrap confidence intervals, the rows of eval_history."""

from __future__ import annotations

import re
import string

import numpy as np
import polars as pl
from scipy.stats import bootstrap

HEURISTIC_METRICS = ["exact_match", "token_f1", "rouge_l", "contains"]
ALL_TOPICS = "__all__"


def squad_normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def contains(prediction: str, reference: str) -> float:
    """1 when the normalised reference appears as whole words in the normalised prediction: a right answer
    said in a sentence, which exact match and token F1 score low."""
    reference, prediction = squad_normalise(reference), squad_normalise(prediction)
    return float(bool(reference) and f" {reference} " in f" {prediction} ")


def _item_scores(prediction: str, reference: str) -> tuple[float, float, float, float]:
    # torchmetrics imports torch and transformers (seconds): only pay for it when scoring
    from torchmetrics.functional.text import rouge_score, squad

    if not prediction.strip():  # no answer is wrong, whatever the reference (SQuAD scores an empty pair 1)
        return 0.0, 0.0, 0.0, 0.0
    qa = squad(
        {"prediction_text": prediction, "id": "0"}, {"answers": {"text": [reference], "answer_start": [0]}, "id": "0"}
    )
    rouge = rouge_score(prediction, reference, rouge_keys="rougeL")["rougeL_fmeasure"]
    return qa["exact_match"].item() / 100, qa["f1"].item() / 100, rouge.item(), contains(prediction, reference)


def score_items(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with exact_match, token_f1 (both after SQuAD normalisation: case, punctuation,
    articles), rouge_l (LCS F-measure, ROUGE-1.5.5 tokens) and contains of prediction against reference."""
    scores = [_item_scores(p or "", r or "") for p, r in zip(frame["prediction"], frame["reference"])]
    # torchmetrics computes in float32: digits past the 6th decimal are noise
    return frame.with_columns(
        pl.Series(name, [s[i] for s in scores], dtype=pl.Float64).round(6) for i, name in enumerate(HEURISTIC_METRICS)
    )


def _mean_ci(values: np.ndarray, confidence: float, n_resamples: int, seed: int) -> dict:
    if values.size == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(values.mean())
    if np.ptp(values) == 0:  # one value or all equal: nothing to resample (scipy warns and gives NaN)
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": values.size}
    # A fresh generator per group: a group's interval does not depend on which other groups exist
    ci = bootstrap(
        (values,),
        np.mean,
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
    """Mean and bootstrap percentile interval of each metric per group of `by`, per topic and over
    all topics ("__all__"). Null scores (a judge answer that could not be parsed) are left out,
    never counted as 0; `n` counts the values used."""
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
            **_mean_ci(np.sort(np.asarray(row["value"], dtype=float)), confidence, n_resamples, seed),
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
