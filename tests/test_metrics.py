import hashlib
import math
import warnings

import numpy as np
import polars as pl
import pytest
from scipy.stats import bootstrap

from nexa_core.evaluate.judge import RUBRICS_DIR, JudgementError, load_rubric, parse_judgement
from nexa_core.evaluate.metrics import aggregate, score_items

BY = ["domain", "round", "checkpoint_id", "model_role"]


# --- heuristic scores ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, reference, em, f1, rouge_l",
    [
        # SQuAD normalisation drops case, punctuation and articles; ROUGE keeps "the": P 1/2, R 1
        ("The Photon.", "photon", 1.0, 1.0, 2 / 3),
        # F1: {cat, sat} of 4 reference tokens, P 1, R 1/2; ROUGE-L: LCS 2 of 3 and 6 tokens
        ("a cat sat", "the cat sat on the mat", 0.0, 2 / 3, 4 / 9),
        # order does not matter to F1 (P 2/3, R 1) but does to the LCS (1 of 3 and 2 tokens)
        ("energy of light", "light energy", 0.0, 0.8, 0.4),
        ("Paris", "London", 0.0, 0.0, 0.0),
        ("", "photon", 0.0, 0.0, 0.0),
        ("   ", "photon", 0.0, 0.0, 0.0),
        (None, "photon", 0.0, 0.0, 0.0),
    ],
)
def test_score_items_known_values(prediction, reference, em, f1, rouge_l):
    scored = score_items(
        pl.DataFrame(
            {"prediction": [prediction], "reference": [reference]},
            schema={"prediction": pl.String, "reference": pl.String},
        )
    )
    row = scored.row(0, named=True)
    assert row["exact_match"] == em
    assert row["token_f1"] == pytest.approx(f1, abs=1e-6)
    assert row["rouge_l"] == pytest.approx(rouge_l, abs=1e-6)


def test_score_items_keeps_rows_and_types():
    frame = pl.DataFrame(
        {"example_id": ["a", "b", "c"], "prediction": ["x y", "z", ""], "reference": ["x y", "x", "x"]}
    )
    scored = score_items(frame)
    assert scored["example_id"].to_list() == ["a", "b", "c"]
    for name in ("exact_match", "token_f1", "rouge_l"):
        assert scored.schema[name] == pl.Float64
        assert scored[name].to_list() == [1.0, 0.0, 0.0]
    assert score_items(frame.head(0)).columns == scored.columns


# --- aggregates ---------------------------------------------------------------------------------


def _scores(values: dict[str, list], topics: list[str], checkpoint: str = "ck1") -> pl.DataFrame:
    n = len(topics)
    return pl.DataFrame(
        {
            "domain": ["physics"] * n,
            "round": [1] * n,
            "checkpoint_id": [checkpoint] * n,
            "model_role": ["student"] * n,
            "topic": topics,
            **values,
        },
        schema_overrides={name: pl.Float64 for name in values},
    )


def _row(frame: pl.DataFrame, **where) -> dict:
    rows = frame.filter(**where)
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def test_aggregate_groups_topics_and_all():
    rng = np.random.default_rng(1)
    frames = [
        _scores(
            {"rouge_l": rng.random(6).tolist(), "token_f1": rng.random(6).tolist()},
            ["optics", "optics", "optics", "waves", "waves", "waves"],
            checkpoint,
        )
        for checkpoint in ("ck1", "ck2")
    ]
    scores = pl.concat(frames)
    result = aggregate(scores, ["rouge_l", "token_f1"], BY)
    assert result.columns == [*BY, "topic", "metric", "mean", "ci_low", "ci_high", "n"]
    assert result.height == 2 * 3 * 2  # checkpoints x (2 topics + __all__) x metrics
    assert set(result["topic"]) == {"optics", "waves", "__all__"}
    for checkpoint, frame in zip(("ck1", "ck2"), frames):
        every = _row(result, checkpoint_id=checkpoint, topic="__all__", metric="rouge_l")
        assert every["n"] == 6
        assert every["mean"] == pytest.approx(frame["rouge_l"].mean())
        optics = _row(result, checkpoint_id=checkpoint, topic="optics", metric="token_f1")
        assert optics["n"] == 3
        assert optics["mean"] == pytest.approx(frame["token_f1"].head(3).mean())
    assert (result["ci_low"] <= result["mean"]).all() and (result["mean"] <= result["ci_high"]).all()
    assert (result["ci_low"] < result["ci_high"]).all()


def test_aggregate_is_a_percentile_bootstrap_of_the_mean():
    values = np.random.default_rng(2).binomial(1, 0.3, 400).astype(float)
    row = _row(
        aggregate(_scores({"exact_match": values.tolist()}, ["t"] * 400), ["exact_match"], BY, seed=7), topic="__all__"
    )
    expected = bootstrap(
        (np.sort(values),), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(7)
    ).confidence_interval
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.low, expected.high))
    half_width = 1.96 * math.sqrt(values.mean() * (1 - values.mean()) / 400)  # normal approximation
    assert (row["ci_high"] - row["ci_low"]) / 2 == pytest.approx(half_width, rel=0.2)


def test_aggregate_confidence_widens_the_interval():
    scores = _scores({"rouge_l": np.random.default_rng(3).random(50).tolist()}, ["t"] * 50)
    narrow = _row(aggregate(scores, ["rouge_l"], BY, confidence=0.5), topic="t")
    wide = _row(aggregate(scores, ["rouge_l"], BY, confidence=0.99), topic="t")
    assert wide["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < wide["ci_high"]


def test_aggregate_excludes_nulls_and_counts_them_out():
    scores = _scores(
        {"judge_score": [1.0, None, 0.5, None, None], "rouge_l": [0.2, 0.4, 0.6, 0.8, 1.0]},
        ["optics", "optics", "optics", "waves", "waves"],
    )
    result = aggregate(scores, ["judge_score", "rouge_l"], BY)
    optics = _row(result, topic="optics", metric="judge_score")
    assert (optics["n"], optics["mean"]) == (2, pytest.approx(0.75))
    waves = _row(result, topic="waves", metric="judge_score")  # nothing parseable: no score at all
    assert (waves["n"], waves["mean"], waves["ci_low"], waves["ci_high"]) == (0, None, None, None)
    assert _row(result, topic="__all__", metric="judge_score")["n"] == 2
    assert _row(result, topic="__all__", metric="rouge_l")["n"] == 5


def test_aggregate_is_deterministic_for_a_seed():
    scores = _scores({"token_f1": np.random.default_rng(4).random(30).tolist()}, ["a", "b", "c"] * 10)
    first = aggregate(scores, ["token_f1"], BY, seed=11)
    assert first.equals(aggregate(scores.reverse(), ["token_f1"], BY, seed=11))
    assert not first.equals(aggregate(scores, ["token_f1"], BY, seed=12))


def test_aggregate_single_and_constant_samples_without_warnings():
    scores = _scores({"exact_match": [1.0, 0.0, 0.0, 0.0]}, ["alone", "same", "same", "same"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = aggregate(scores, ["exact_match"], BY)
    alone = _row(result, topic="alone")
    assert (alone["mean"], alone["ci_low"], alone["ci_high"], alone["n"]) == (1.0, 1.0, 1.0, 1)
    same = _row(result, topic="same")
    assert (same["mean"], same["ci_low"], same["ci_high"], same["n"]) == (0.0, 0.0, 0.0, 3)
    assert not result.select(pl.col("mean", "ci_low", "ci_high").is_nan().any()).row(0)[0]


def test_aggregate_of_no_scores_is_empty_with_columns():
    result = aggregate(_scores({"rouge_l": []}, []), ["rouge_l"], BY)
    assert result.height == 0
    assert result.schema["n"] == pl.Int64 and result.schema["mean"] == pl.Float64


# --- rubric judge -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rubric():
    return load_rubric("qa_correctness_v1")


def test_rubric_file_fields_and_hash(rubric):
    raw = (RUBRICS_DIR / "qa_correctness_v1.yaml").read_bytes()
    assert rubric.sha256 == hashlib.sha256(raw).hexdigest()
    assert (rubric.min, rubric.max) == (1, 5)
    assert len(rubric.criteria) == 5 and rubric.description
    assert load_rubric("qa_correctness_v1") is rubric  # cached


def test_rubric_render_shows_the_item_and_criteria(rubric):
    messages = rubric.render("physics", "What is a photon?", "A quantum of light.", "A light particle.")
    assert [m["role"] for m in messages] == ["system", "user"]
    system, user = messages[0]["content"], messages[1]["content"]
    assert "physics" in system
    for text in ("What is a photon?", "A quantum of light.", "A light particle.", *rubric.criteria):
        assert text in user
    assert '{"score": <integer from 1 to 5>, "reason": "<one sentence>"}' in user


def test_rubric_render_keeps_braces_in_the_item(rubric):
    user = rubric.render("maths", "Is {x} a set?", "Yes, {x} is a set.", "{prediction}")[1]["content"]
    assert "Is {x} a set?" in user and "{prediction}" in user


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"score": 5, "reason": "Matches the reference."}', (1.0, "Matches the reference.")),
        ('{"score": 1, "reason": "Wrong."}', (0.0, "Wrong.")),
        ('```json\n{"score": 3, "reason": "Half right."}\n```', (0.5, "Half right.")),
        ('```\n{"score": 4, "reason": " Minor gap. "}\n```', (0.75, "Minor gap.")),
        ('{"score": 2}', (0.25, "")),
    ],
)
def test_parse_judgement(rubric, text, expected):
    assert parse_judgement(text, rubric) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("  \n", "empty"),
        (None, "empty"),
        ("The answer is correct, 5/5.", "not JSON"),
        ('```json\n{"score": 5,\n```', "not JSON"),
        ("[5]", "JSON object"),
        ('{"reason": "no score"}', "integer"),
        ('{"score": "5", "reason": "a string"}', "integer"),
        ('{"score": 4.5, "reason": "between points"}', "integer"),
        ('{"score": true, "reason": "a bool"}', "integer"),
        ('{"score": 0, "reason": "below"}', "outside"),
        ('{"score": 6, "reason": "above"}', "outside"),
    ],
)
def test_parse_judgement_rejects_garbage(rubric, text, message):
    with pytest.raises(JudgementError, match=message):
        parse_judgement(text, rubric)


def test_load_rubric_unknown_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match="qa_correctness_v1"):
        load_rubric("qa_correctness_v0")


def test_load_rubric_rejects_a_template_typo(tmp_path):
    (tmp_path / "typo_v1.yaml").write_text(
        "description: d\nscale: {min: 1, max: 3}\ncriteria: [c]\nsystem: s\nuser: '{questoin}'\n"
    )
    with pytest.raises(ValueError, match="malformed"):
        load_rubric("typo_v1", tmp_path)
