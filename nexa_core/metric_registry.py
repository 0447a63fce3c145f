"""Every metric, declared once, as tables.py spells every table. A metric says what it means, which way is
better, how a model's item scores are aggregated and the interval around the aggregate computed, which sources
score it (the test split's answers, the benchmark suites) and how an item is scored; whether it is a source's
primary metric (what a model is ranked, gated and given feedback on) and whether the lift tables show it beside
the base. The tables' columns (nexa_core.schemas), scoring and aggregation (nexa_core.evaluate.metrics), the
leaderboard, the gates and their cards, and the feedback set read it from here: adding a metric is one
`register(Metric(...))` below (and a test). Modelled on lm-evaluation-harness's `register_metric`.

Plain Python on the lowest floor: the scorers import torchmetrics only when they first score."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, wraps

TEST = "test"  # the SFT set's test split: per item in eval_scores, aggregated in eval_history
SUITES = "suites"  # the domain's benchmark suites: per item in benchmark_scores, aggregated in benchmark_history
SOURCES = (TEST, SUITES)
GATE_PREFIX = {TEST: "", SUITES: "benchmark_"}  # the gates' name of a source's metric: token_f1, benchmark_accuracy
JUDGE = "judge"  # scored by the rubric judge (nexa_core.evaluate.judge), only when one is configured
LOG_LIKELIHOOD = "log-likelihood"  # scored by lm-evaluation-harness on multiple-choice items (chance: a uniform guess)
AGGREGATIONS = ("mean",)  # over a model's item scores (nexa_core.evaluate.metrics.AGGREGATE)
INTERVALS = ("bootstrap",)  # percentile bootstrap of the aggregate, at the run's confidence (95% by default)


class MetricError(ValueError):
    pass


@dataclass(frozen=True)
class Metric:
    name: str  # the column of the item tables and the `metric` of the histories
    label: str  # as tables and reports name it
    description: str
    sources: tuple[str, ...]
    score: Callable[[str, str], float] | None = None  # (prediction, reference) -> the item's score
    given_by: str | None = None  # JUDGE or LOG_LIKELIHOOD: who scores an item when `score` is None
    higher_is_better: bool = True
    aggregation: str = "mean"
    interval: str = "bootstrap"
    # {source: rank}: a model's primary metric on a source is the lowest-ranked one it has a score on; the
    # highest rank of a source must always be scored (it is the fallback)
    primary: dict[str, int] = field(default_factory=dict)
    lift: tuple[str, ...] = ()  # sources whose lift tables and distilled_scores show it beside the base

    @property
    def multiple_choice(self) -> bool:
        return self.given_by == LOG_LIKELIHOOD

    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Declare a metric; a name declared twice or a declaration that contradicts itself is refused."""

    def refuse(why: str) -> MetricError:
        return MetricError(f"metric {metric.name!r}: {why}")

    if metric.name in REGISTRY:
        raise refuse("is declared already")
    if not metric.sources or set(metric.sources) - set(SOURCES):
        raise refuse(f"sources {metric.sources}: each must be one of {SOURCES}")
    if (metric.score is None) == (metric.given_by is None):
        raise refuse(f"needs exactly one of a `score` function or `given_by` ({JUDGE} or {LOG_LIKELIHOOD})")
    if metric.given_by not in (None, JUDGE, LOG_LIKELIHOOD):
        raise refuse(f"given_by {metric.given_by!r}: expected {JUDGE} or {LOG_LIKELIHOOD}")
    if metric.aggregation not in AGGREGATIONS or metric.interval not in INTERVALS:
        raise refuse(f"aggregation must be one of {AGGREGATIONS} and interval one of {INTERVALS}")
    if set(metric.primary) - set(metric.sources) or set(metric.lift) - set(metric.sources):
        raise refuse("is primary or shown in a lift table for a source that does not score it")
    if metric.primary and not metric.higher_is_better:
        # models are ranked, gated by default and given feedback on it: higher must be better
        raise refuse("a primary metric must be higher-is-better")
    REGISTRY[metric.name] = metric
    return metric


def get(name: str) -> Metric:
    if name not in REGISTRY:
        raise MetricError(f"unknown metric {name!r}; the registered metrics are {sorted(REGISTRY)}")
    return REGISTRY[name]


def of(source: str) -> list[Metric]:
    """A source's metrics, in the order they were declared (the order of the item tables' columns)."""
    return [m for m in REGISTRY.values() if source in m.sources]


def names(source: str) -> list[str]:
    return [m.name for m in of(source)]


def primary(source: str) -> list[str]:
    """A source's primary metrics, first choice first."""
    return [m.name for m in sorted((m for m in of(source) if source in m.primary), key=lambda m: m.primary[source])]


def lift_measures() -> list[tuple[str, Metric]]:
    """(source, metric) of every lift-table measure: the test split's first, then the suites'."""
    return [(source, m) for source in SOURCES for m in of(source) if source in m.lift]


def gate_name(source: str, metric: str) -> str:
    return GATE_PREFIX[source] + metric


def gate_names() -> dict[str, tuple[str, str]]:
    """Every metric a gate can judge on, by its gate name: {gate name: (source, metric)}."""
    return {gate_name(source, m.name): (source, m.name) for source in SOURCES for m in of(source)}


def gate_source(name: str) -> tuple[str, str]:
    """(source, metric) of a gate name; an unknown one is refused with the names a gate knows."""
    known = gate_names()
    if name not in known:
        raise MetricError(f"no metric {name!r} to judge on; a gate knows {sorted(known)}")
    return known[name]


# --- the scorers --------------------------------------------------------------------------------------------


def squad_normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


@lru_cache(maxsize=4096)  # exact match and token F1 come from one SQuAD call
def _squad(prediction: str, reference: str) -> tuple[float, float]:
    # torchmetrics imports torch and transformers (seconds): only paid when scoring
    from torchmetrics.functional.text import squad

    qa = squad(
        {"prediction_text": prediction, "id": "0"}, {"answers": {"text": [reference], "answer_start": [0]}, "id": "0"}
    )
    return qa["exact_match"].item() / 100, qa["f1"].item() / 100


def _answered(scorer: Callable[[str, str], float]) -> Callable[[str, str], float]:
    """No answer is wrong, whatever the reference (SQuAD scores an empty pair 1)."""

    @wraps(scorer)
    def score(prediction: str, reference: str) -> float:
        return scorer(prediction, reference) if prediction.strip() else 0.0

    return score


@_answered
def exact_match(prediction: str, reference: str) -> float:
    return _squad(prediction, reference)[0]


@_answered
def token_f1(prediction: str, reference: str) -> float:
    return _squad(prediction, reference)[1]


@_answered
def rouge_l(prediction: str, reference: str) -> float:
    from torchmetrics.functional.text import rouge_score

    return rouge_score(prediction, reference, rouge_keys="rougeL")["rougeL_fmeasure"].item()


@_answered
def contains(prediction: str, reference: str) -> float:
    reference, prediction = squad_normalise(reference), squad_normalise(prediction)
    return float(bool(reference) and f" {reference} " in f" {prediction} ")


# --- the metrics, in the order of the item tables' columns ---------------------------------------------------

register(
    Metric(
        "accuracy",
        "acc",
        "multiple choice: 1 when the choice with the highest summed log-probability is the correct one (lm-eval's acc)",
        (SUITES,),
        given_by=LOG_LIKELIHOOD,
        primary={SUITES: 0},
        lift=(SUITES,),
    )
)
register(
    Metric(
        "acc_norm",
        "acc_norm",
        "multiple choice: the same with each choice's log-probability divided by its length in bytes",
        (SUITES,),
        given_by=LOG_LIKELIHOOD,
        lift=(SUITES,),
    )
)
register(
    Metric(
        "exact_match",
        "exact match",
        "1 when the answer equals the reference after SQuAD normalisation (case, punctuation, articles, spaces)",
        (TEST, SUITES),
        score=exact_match,
    )
)
register(
    Metric(
        "token_f1",
        "token F1",
        "F1 of the answer's and the reference's words after SQuAD normalisation",
        (TEST, SUITES),
        score=token_f1,
        primary={TEST: 1},
        lift=(TEST,),
    )
)
register(
    Metric(
        "rouge_l",
        "ROUGE-L",
        "F-measure of the longest common subsequence of the answer's and the reference's words (ROUGE-1.5.5 tokens)",
        (TEST, SUITES),
        score=rouge_l,
    )
)
register(
    Metric(
        "contains",
        "contains answer",
        "1 when the normalised reference appears as whole words in the normalised answer: a right answer said in "
        "a sentence, which exact match and token F1 score low",
        (TEST,),
        score=contains,
        lift=(TEST,),
    )
)
register(
    Metric(
        "judge_score",
        "judge score",
        "the rubric judge's score scaled to [0, 1]; none for an answer whose judgement could not be parsed",
        (TEST,),
        given_by=JUDGE,
        primary={TEST: 0},
    )
)
