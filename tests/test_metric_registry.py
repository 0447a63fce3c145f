"""The metric registry is the one place a metric is declared: a metric registered there alone is scored, aggregated,
ranked, shown beside the base, offered to and judged by the gate, in its direction; the tables' columns and the
primary metrics are the registry's; a declaration that contradicts itself is refused."""

from dataclasses import replace
from datetime import datetime, timezone

import polars as pl
import pytest

from nexa_core import metric_registry, schemas
from nexa_core.evaluate.feedback import primary_metric
from nexa_core.evaluate.leaderboard import lift_rows, rank_checkpoints, ranked_schema, write_report
from nexa_core.evaluate.metrics import aggregate, eval_metric_names, score_items
from nexa_core.metric_registry import SUITES, TEST, Metric, MetricError, register
from nexa_core.release.card import metric_glossary
from nexa_core.release.gate import GateConfig, ReleaseError, gate_metric, promotion_gate, score_of

BY = ["domain", "round", "checkpoint_id", "sft_version", "model_role"]
REFERENCE = "light travels as a wave"
# student and base answers to the same 20 questions: the student answers tersely and right more often
ANSWERS = {
    "student": ["light travels as a wave"] * 16 + ["sound"] * 4,
    "base": ["well, light is a particle and nobody knows how it travels"] * 16 + ["light travels as a wave"] * 4,
}


def first_word(prediction: str, reference: str) -> float:
    """1 when the answer starts with the reference's first word."""
    words, expected = prediction.lower().split(), reference.lower().split()
    return float(bool(words) and bool(expected) and words[0] == expected[0])


def extra_words(prediction: str, reference: str) -> float:
    """The share of the answer's words that are not in the reference (lower is better)."""
    words, expected = prediction.lower().split(), set(reference.lower().split())
    return sum(w not in expected for w in words) / len(words) if words else 1.0


@pytest.fixture
def registry(monkeypatch):
    """The registry as declared, restored after the test (what a test registers is gone with it)."""
    monkeypatch.setattr(metric_registry, "REGISTRY", dict(metric_registry.REGISTRY))
    return metric_registry.REGISTRY


def evaluated(checkpoint: str = "ck-physics-1") -> pl.DataFrame:
    """eval_history rows of one evaluation, made as eval_metrics makes them: items scored, then aggregated."""
    n = len(ANSWERS["student"])
    items = pl.DataFrame(
        {
            "domain": "physics",
            "round": 0,
            "checkpoint_id": checkpoint,
            "sft_version": 1,
            "model_role": [role for role in ANSWERS for _ in range(n)],
            "topic": ["optics", "waves"] * n,
            "prediction": [a for answers in ANSWERS.values() for a in answers],
            "reference": REFERENCE,
        }
    )
    summary = aggregate(score_items(items), eval_metric_names(judged=False), BY, n_resamples=500)
    return schemas.conform(summary.with_columns(created_at=pl.lit(datetime.now(timezone.utc))), schemas.EVAL_HISTORY)


def test_a_metric_added_in_the_registry_alone_shows_up_in_the_leaderboard_and_the_gate(registry, tmp_path):
    register(Metric("first_word", "first word", first_word.__doc__, (TEST,), score=first_word, lift=(TEST,)))
    history = evaluated()
    assert set(history["metric"]) == {"exact_match", "token_f1", "rouge_l", "contains", "first_word"}
    student = history.filter((pl.col("metric") == "first_word") & (pl.col("topic") == "__all__"))
    assert dict(student.select("model_role", "mean").iter_rows()) == {"student": 0.8, "base": 0.2}

    # the leaderboard: a column of the ranked table and of the report, a measure of the lift table
    ranked = rank_checkpoints(history)
    assert "first_word" in ranked_schema() and ranked["first_word"].to_list() == [pytest.approx(0.8)]
    page = write_report(history, ranked, tmp_path / "leaderboard.html").read_text()
    assert "<th>first_word</th>" in page
    lift = {r["measure"]: r for r in lift_rows(history, None, ["ck-physics-1"])}
    assert lift["test first word"]["verdict"] == "lift" and lift["test first word"]["student"]["mean"] == 0.8

    # the gate: offered, and judged on
    config = GateConfig(metric="first_word")
    assert gate_metric(config, "ck-physics-1", history, None) == "first_word"
    candidate, base = (score_of("ck-physics-1", role, "first_word", history, None) for role in ("student", "base"))
    decision = promotion_gate(config, candidate, base, None, None)
    assert decision.passed and decision.metric == "first_word" and decision.lifts["base"] > 0
    with pytest.raises(ReleaseError, match="first_word"):  # an unknown name is refused with the known ones
        GateConfig(metric="first_wrd")
    assert "first word" in "\n".join(metric_glossary(["first_word"]))  # the card says what it is

    # gone with the test: the registry as declared knows nothing of it
    registry.pop("first_word")
    with pytest.raises(ReleaseError, match="first_word"):
        GateConfig(metric="first_word")
    assert "first_word" not in ranked_schema()


def test_a_lower_is_better_metric_is_judged_in_its_direction(registry):
    fewer = Metric(
        "extra_words", "extra words", extra_words.__doc__, (TEST,), score=extra_words, higher_is_better=False
    )
    register(fewer)
    history = evaluated()
    student, base = (score_of("ck-physics-1", role, "extra_words", history, None) for role in ("student", "base"))
    assert student.ci_high < base.ci_low  # the student's answers have fewer words the reference lacks
    decision = promotion_gate(GateConfig(metric="extra_words"), student, base, None, None)
    assert decision.passed and decision.lifts["base"] > 0 and "lower is better" in decision.reasons[1]
    registry["extra_words"] = replace(fewer, lift=(TEST,))  # shown beside the base: a lift, in its direction
    assert verdicts(history)["test extra words"] == "lift"
    # the same numbers on a higher-is-better metric are a loss
    registry["extra_words"] = replace(fewer, higher_is_better=True, lift=(TEST,))
    assert not promotion_gate(GateConfig(metric="extra_words"), student, base, None, None).passed
    assert verdicts(history)["test extra words"] == "below"


def verdicts(history: pl.DataFrame) -> dict[str, str]:
    return {r["measure"]: r["verdict"] for r in lift_rows(history, None, ["ck-physics-1"])}


def test_the_tables_and_the_primary_metrics_are_the_registrys():
    assert [c for c in schemas.EVAL_SCORES if c in metric_registry.REGISTRY] == metric_registry.names(TEST)
    assert [c for c in schemas.BENCHMARK_SCORES if c in metric_registry.REGISTRY] == metric_registry.names(SUITES)
    assert list(schemas.BENCHMARK_ITEMS) == [
        c for c in schemas.BENCHMARK_SCORES if c not in ("domain", "round", "checkpoint_id", "benchmark_config")
    ]
    assert metric_registry.primary(TEST) == ["judge_score", "token_f1"] and metric_registry.primary(SUITES) == [
        "accuracy"
    ]
    assert eval_metric_names(judged=False) == [m for m in metric_registry.names(TEST) if m != "judge_score"]
    judged = pl.DataFrame({"judge_score": [None, 0.5], "token_f1": [0.1, 0.2]})
    assert primary_metric(judged) == "judge_score"
    assert primary_metric(judged.with_columns(judge_score=pl.lit(None, pl.Float64))) == "token_f1"
    assert metric_registry.gate_source("benchmark_acc_norm") == (SUITES, "acc_norm")
    assert metric_registry.gate_source("token_f1") == (TEST, "token_f1")


@pytest.mark.parametrize(
    "change, refusal",
    [
        ({"name": "token_f1"}, "declared already"),
        ({"sources": ("validation",)}, "sources"),
        ({"given_by": "judge"}, "exactly one"),
        ({"aggregation": "max"}, "aggregation"),
        ({"primary": {SUITES: 0}}, "does not score it"),
        ({"primary": {TEST: 2}, "higher_is_better": False}, "higher-is-better"),
    ],
)
def test_a_declaration_that_contradicts_itself_is_refused(registry, change, refusal):
    declared = {"name": "first_word", "label": "first word", "description": "", "sources": (TEST,), "score": first_word}
    with pytest.raises(MetricError, match=refusal):
        register(Metric(**{**declared, **change}))
    assert "first_word" not in registry


def test_rouge_l_on_the_suites_generated_answers_comes_from_its_declaration_alone(tmp_path):
    """ROUGE-L was added to the suites by its registry entry alone (sources test and suites): the suites' items
    carry it, generative answers are scored on it, benchmark_history aggregates it, the gate judges on it and the
    report shows it."""
    from nexa_core.evaluate.benchmark import GENERATIVE, MULTIPLE_CHOICE, score_generative, summarize

    assert "rouge_l" in schemas.BENCHMARK_ITEMS and "rouge_l" in schemas.BENCHMARK_SCORES
    items = pl.DataFrame(
        [
            {"model_role": role, "suite": "optics", "row": row, "kind": GENERATIVE, "topic": "light"}
            | {"reference": "the cat sat on the mat", "prediction": prediction}
            for role, predictions in {"student": ["a cat sat"] * 6, "base": ["Paris"] * 6}.items()
            for row, prediction in enumerate(predictions, start=1)
        ]
        + [
            {"model_role": role, "suite": "optics", "row": 7, "kind": MULTIPLE_CHOICE, "topic": "light"}
            | {"reference": "wave", "prediction": "wave", "n_choices": 2, "accuracy": 1.0, "acc_norm": 1.0}
            for role in ("student", "base")
        ],
        schema=schemas.BENCHMARK_ITEMS,
    )
    scored = score_generative(items)
    generated = scored.filter(pl.col("kind") == GENERATIVE)
    # LCS 2 of 3 and 6 tokens (ROUGE keeps "a" and "the"); no answer in common for the base
    assert generated.filter(pl.col("model_role") == "student")["rouge_l"].to_list() == [pytest.approx(4 / 9)] * 6
    assert generated.filter(pl.col("model_role") == "base")["rouge_l"].to_list() == [0.0] * 6
    assert scored.filter(pl.col("kind") == MULTIPLE_CHOICE)["rouge_l"].is_null().all()

    run = scored.with_columns(domain=pl.lit("physics"), round=pl.lit(0), checkpoint_id=pl.lit("ck-physics-1"))
    summary = summarize(run, ["domain", "round", "checkpoint_id", "model_role"], n_resamples=200)
    rouge = summary.filter((pl.col("metric") == "rouge_l") & (pl.col("suite") == "__all__"))
    assert rouge.height == 4 and rouge["chance"].is_null().all() and (rouge["n"] == 6).all()  # 2 roles, 2 topics

    history = schemas.conform(
        summary.with_columns(created_at=pl.lit(datetime.now(timezone.utc))), schemas.BENCHMARK_HISTORY
    )
    config = GateConfig(metric="benchmark_rouge_l")
    student, base = (
        score_of("ck-physics-1", role, config.metric, evaluated(), history) for role in ("student", "base")
    )
    assert student.mean == pytest.approx(4 / 9) and base.mean == 0.0
    assert promotion_gate(config, student, base, None, None).passed
    page = write_report(evaluated(), rank_checkpoints(evaluated()), tmp_path / "leaderboard.html", history).read_text()
    assert "<td>rouge_l</td>" in page
