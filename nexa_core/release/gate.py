"""The promotion gate: a candidate checkpoint against its base and the current champion on one metric, and the
decision with its numbers and reasons. The model_release asset (nexa_assets/release.py) reads the tables, calls
these, and acts on the decision; the distilled gate (release/distilled.py) reaches its own with the same Tally.

The candidate (the domain's newest evaluated checkpoint) is judged on accuracy over all of the domain's benchmark
suites when the checkpoint was benchmarked, else the test split's primary metric (the judge's score, else token
F1). By default a candidate wins only when its 95% interval lies wholly above the other's (below, for a metric
where lower is better). The metrics a gate knows, their direction and which is primary are
nexa_core.metric_registry's, read when the gate runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from nexa_core import metric_registry
from nexa_core.evaluate.leaderboard import ALL_SUITES, ALL_TOPICS, latest_benchmarks, latest_evaluations
from nexa_core.metric_registry import SUITES, TEST, MetricError, gate_name, gate_names, gate_source, primary

AUTO = "auto"
RULES = ("intervals", "mean")


class ReleaseError(ValueError):
    pass


@dataclass(frozen=True)
class GateRule:
    """`metric`: auto, or any metric of the registry by its gate name (metric_registry.gate_names): a test split
    metric by its name (token_f1, judge_score, ...), a suites metric prefixed (benchmark_accuracy, ...). `rule`:
    intervals (the candidate's ci_low minus the other's ci_high, for a higher-is-better metric) or mean (the
    difference of means); the candidate must exceed each `min_lift_*` by that measure."""

    metric: str = AUTO
    rule: str = "intervals"
    min_lift_over_base: float = 0.0

    def __post_init__(self):
        if self.rule not in RULES:
            raise ReleaseError(f"gate rule {self.rule!r}: expected one of {list(RULES)}")
        if self.metric != AUTO and self.metric not in gate_names():
            raise ReleaseError(f"gate metric {self.metric!r}: expected {AUTO} or one of {sorted(gate_names())}")


@dataclass(frozen=True)
class GateConfig(GateRule):
    """The champion's gate: GateRule, and a lift over the current champion."""

    min_lift_over_champion: float = 0.0


@dataclass(frozen=True)
class Score:
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}] (n={self.n})"


# --- the candidate and its scores -------------------------------------------------------------------


def newest_evaluated(history: pl.DataFrame, domain: str) -> str | None:
    """The checkpoint of the domain whose student evaluation is the most recent."""
    rows = history.filter((pl.col("domain") == domain) & (pl.col("model_role") == "student"))
    return rows.sort("created_at")["checkpoint_id"][-1] if rows.height else None


def benchmarked(benchmarks: pl.DataFrame | None, checkpoint_id: str) -> bool:
    return benchmarks is not None and benchmarks.filter(pl.col("checkpoint_id") == checkpoint_id).height > 0


def candidate_metrics(config: GateRule) -> list[str]:
    """The gate names config.metric stands for, first choice first: auto is the suites' primary metrics (their
    accuracy), then the test split's (the judge's score when anything was judged, else token F1)."""
    if config.metric != AUTO:
        return [config.metric]
    return [gate_name(SUITES, m) for m in primary(SUITES)] + [gate_name(TEST, m) for m in primary(TEST)]


def gate_metric(config: GateConfig, checkpoint_id: str, history: pl.DataFrame, benchmarks: pl.DataFrame | None) -> str:
    """The metric this candidate is judged on (config.metric resolved when it is auto)."""
    for metric in candidate_metrics(config):
        if score_of(checkpoint_id, "student", metric, history, benchmarks):
            return metric
    scored = sorted(set(history.filter(pl.col("checkpoint_id") == checkpoint_id)["metric"]))
    suites = [gate_name(SUITES, m) for m in metric_registry.names(SUITES)]
    raise ReleaseError(
        f"checkpoint {checkpoint_id} has no score on the gate's metric {config.metric!r}; its test "
        f"split has {scored or 'no scores'}, benchmark suites give {' and '.join(suites)}"
    )


def score_of(
    checkpoint_id: str, role: str, metric: str, history: pl.DataFrame, benchmarks: pl.DataFrame | None
) -> Score | None:
    """A role's latest score on the whole domain, `metric` by its gate name; base rows carry the checkpoint_id of
    their student."""
    try:
        source, name = gate_source(metric)
    except MetricError as exc:
        raise ReleaseError(str(exc)) from exc
    if source == SUITES:
        if benchmarks is None or benchmarks.is_empty():
            return None
        rows = latest_benchmarks(benchmarks).filter((pl.col("suite") == ALL_SUITES) & (pl.col("metric") == name))
    else:
        rows = latest_evaluations(history).filter(pl.col("metric") == name)
    rows = rows.filter(
        (pl.col("checkpoint_id") == checkpoint_id)
        & (pl.col("model_role") == role)
        & (pl.col("topic") == ALL_TOPICS)
        & (pl.col("n") > 0)
        & pl.col("mean").is_not_null()
    )
    if rows.is_empty():
        return None
    r = rows.row(0, named=True)
    return Score(metric, r["mean"], r["ci_low"], r["ci_high"], r["n"])


# --- the gate ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    metric: str
    rule: str
    candidate: Score
    base: Score | None
    champion: Score | None
    champion_version: int | None
    lifts: dict[str, float]  # measured by the rule, against base and champion
    reasons: list[str]

    def description(self) -> str:
        verdict = "promoted" if self.passed else "refused; the champion stays as it was"
        return f"{verdict}: " + "; ".join(self.reasons)

    def metadata(self) -> dict:
        """The numbers, flat, for the check's metadata."""
        out: dict = {"metric": self.metric, "rule": self.rule}
        for name, score in (("candidate", self.candidate), ("base", self.base), ("champion", self.champion)):
            if score:
                out |= {
                    f"{name}/mean": score.mean,
                    f"{name}/ci_low": score.ci_low,
                    f"{name}/ci_high": score.ci_high,
                    f"{name}/n": score.n,
                }
        if self.champion_version is not None:
            out["champion_version"] = self.champion_version
        return out | {f"lift_over_{name}": value for name, value in self.lifts.items()}


def _lift(candidate: Score, other: Score, rule: str) -> tuple[float, str]:
    """(how far the candidate is better than the other by the rule, in the metric's direction, and how that
    was measured)."""
    if metric_registry.get(gate_source(candidate.metric)[1]).higher_is_better:
        if rule == "intervals":
            return candidate.ci_low - other.ci_high, "its ci_low minus the other's ci_high"
        return candidate.mean - other.mean, "the difference of means"
    if rule == "intervals":
        return other.ci_low - candidate.ci_high, "the other's ci_low minus its ci_high (lower is better)"
    return other.mean - candidate.mean, "the other's mean minus its mean (lower is better)"


def compare(name: str, candidate: Score, other: Score, rule: str, margin: float) -> tuple[bool, float, str]:
    lift, measure = _lift(candidate, other, rule)
    beats = lift > margin
    return (
        beats,
        lift,
        (
            f"candidate {candidate} {'beats' if beats else 'does not beat'} {name} {other}: "
            f"{measure} is {lift:+.4f}, {'above' if beats else 'not above'} the threshold {margin:+.4f}"
        ),
    )


@dataclass
class Tally:
    """A gate's decision as it is reached: each comparison's lift and reason, and whether all of them were won."""

    candidate: Score
    rule: str
    reasons: list[str]
    lifts: dict[str, float] = field(default_factory=dict)
    passed: bool = True

    def weigh(self, key: str, name: str, other: Score | None, margin: float, missing: str) -> None:
        """The candidate against `other` by the rule (its lift under `key`); lost, for `missing`, without a score."""
        if other is None:
            self.require(False, missing)
            return
        beats, self.lifts[key], reason = compare(name, self.candidate, other, self.rule, margin)
        self.require(beats, reason)

    def require(self, ok: bool, reason: str) -> None:
        self.passed &= ok
        self.reasons.append(reason)


def promotion_gate(
    config: GateConfig, candidate: Score, base: Score | None, champion: Score | None, champion_version: int | None
) -> GateDecision:
    """Beat the base, and the champion when there is one, on the gate's metric by its rule."""
    tally = Tally(candidate, config.rule, [f"metric {candidate.metric}, rule {config.rule}"])
    tally.weigh(
        "base",
        "its base",
        base,
        config.min_lift_over_base,
        f"the base has no {candidate.metric} score beside this checkpoint; evaluate it with the base",
    )
    if champion_version is not None:
        tally.weigh(
            "champion",
            f"champion v{champion_version}",
            champion,
            config.min_lift_over_champion,
            f"champion v{champion_version} has no {candidate.metric} score to compare with; "
            f"evaluate it on that metric or set the gate's metric to one it has",
        )
    else:
        tally.reasons.append("no champion yet")
    return GateDecision(
        tally.passed,
        candidate.metric,
        config.rule,
        candidate,
        base,
        champion,
        champion_version,
        tally.lifts,
        tally.reasons,
    )
