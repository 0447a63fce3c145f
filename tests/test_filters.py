import json

import numpy as np
import polars as pl
from teacher_frames import teacher_frames

from nexa_core.distill.dedup import MinHashConfig, near_duplicates
from nexa_core.distill.filters import filter_pairs, reason_counts, scrub_pii

PASSAGE = (
    "Entropy is a measure of the number of microscopic arrangements of a system. "
    "Water boils at 100 degrees Celsius at a pressure of one atmosphere."
)


def frames(responses: list[str]):
    return teacher_frames(responses, PASSAGE)


def pairs(*items):
    return json.dumps({"pairs": [{"question": q, "answer": a} for q, a in items]})


def test_each_filter_keeps_its_reason():
    outputs, inputs = frames(
        [
            pairs(
                ("What is entropy?", "A measure of the number of microscopic arrangements of a system."),
                ("Q?", "x"),
                ("At what temperature does water boil?", "100 degrees Celsius " * 60),
                ("What is entropy exactly?", "I'm sorry, the passage does not say."),
                ("Who discovered entropy first?", "Rudolf Clausius in Prussia in 1865."),
            ),
            pairs(("What is entropy?", "A measure of the number of microscopic arrangements of a system.")),
            pairs(("Define entropy.", "A measure of the number of microscopic arrangements of a system.")),
            "this is not json",
        ]
    )
    result = filter_pairs(outputs, inputs)
    by_q = {r["question"]: r["reject_reason"] for r in result.iter_rows(named=True)}
    assert by_q["Q?"] == "too_short"
    assert by_q["At what temperature does water boil?"] == "too_long"
    assert by_q["What is entropy exactly?"] == "refusal"
    assert by_q["Who discovered entropy first?"] == "ungrounded"
    assert by_q["Define entropy."] == "near_duplicate"
    assert by_q[None] == "unparseable_response"
    unparseable = result.filter(pl.col("reject_reason") == "unparseable_response").row(0, named=True)
    assert "partition physics" in unparseable["reject_detail"] and "physics/heat.md" in unparseable["reject_detail"]
    counts = reason_counts(result)
    assert counts["kept"] == 1 and counts["exact_duplicate"] == 1 and sum(counts.values()) == result.height
    assert result["pair_id"].n_unique() == result.height


def test_pii_is_scrubbed_not_dropped():
    text, changed = scrub_pii("Write to jane.doe@example.org or call +1 415-555-0199 for the data.")
    assert changed and "[EMAIL]" in text and "[PHONE]" in text and "example.org" not in text
    assert scrub_pii("It boils at 100 degrees, 1.5 x 10^3 pascal.") == (
        "It boils at 100 degrees, 1.5 x 10^3 pascal.",
        False,
    )


def test_near_duplicate_recall_on_planted_copies():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(3000)]
    base = [" ".join(rng.choice(vocab, 30)) for _ in range(300)]
    copies = []
    for text in base[:100]:
        words = text.split()
        words[rng.integers(len(words))] = "changed"  # one word edited: Jaccard of 3-grams ~0.85
        copies.append(" ".join(words))
    match = near_duplicates(base + copies, MinHashConfig())
    assert (match[:300] == -1).all()  # no false positives among distinct texts
    assert (match[300:] >= 0).mean() >= 0.95
    assert (match[300:][match[300:] >= 0] == np.arange(100)[match[300:] >= 0]).all()


def test_block_size_does_not_change_the_verdicts():
    outputs, inputs = frames(
        [
            pairs(("What is entropy?", "A measure of the number of microscopic arrangements of a system.")),
            pairs(
                ("What is entropy?", "A measure of the number of microscopic arrangements of a system."),
                ("At what temperature does water boil?", "100 degrees Celsius"),
            ),
            pairs(("Define entropy.", "A measure of the number of microscopic arrangements of a system.")),
            "{broken",
        ]
    )
    whole = filter_pairs(outputs, inputs)
    assert filter_pairs(outputs, inputs, block=1).equals(whole)
    assert whole["reject_reason"].to_list() == [None, "exact_duplicate", None, "near_duplicate", "unparseable_response"]


LEARNABLE = (
    "The Moon is the brightest object in the night sky besides the Sun. Types of fronts include cold fronts "
    "and warm fronts. Keratin is a fibrous, rope-like protein that gives hair, nails, and skin their hardness. "
    "Cold fronts push under the warm fronts they collide with. The Moon lights the night sky more than the stars do."
)


def test_each_learnability_filter_rejects_its_bad_pair_and_keeps_a_good_one():
    good_and_bad = {
        # reason: (the bad pair, a good pair of the same shape)
        "no_content_word": (
            ("What is when it?", "The brightest object in the night sky."),
            ("What is the Moon?", "The brightest object in the night sky besides the Sun."),
        ),
        "function_word_answer": (
            ("Complete the statement: Types of fronts ...", "include"),
            ("Complete the statement: The brightest object in the night sky besides the Sun is the ...", "Moon"),
        ),
        "cut_mid_phrase": (
            (
                "What is the brightest object in the night sky?",
                "The Moon is the brightest object in the night sky besides",
            ),
            ("What gives hair, nails, and skin their hardness?", "Keratin, a fibrous protein."),
        ),
        "answer_in_question": (
            ("Which fronts are cold fronts and warm fronts?", "Cold fronts"),
            ("What are two types of fronts?", "Cold fronts and warm fronts"),
        ),
    }
    for reason, (bad, good) in good_and_bad.items():
        result = filter_pairs(*teacher_frames([pairs(bad, good)], LEARNABLE))
        assert result["reject_reason"].to_list() == [reason, None], (reason, result["reject_detail"].to_list())
        assert result["reject_detail"][0]  # each rejection says what it saw
    # An open end, an unbalanced bracket and a leading conjunction are cut phrases too; a hyphenated word,
    # a preposition English leaves at the end, and an elliptical verb are not.
    cut = filter_pairs(
        *teacher_frames(
            [
                pairs(
                    ("What does keratin give hair?", "Hardness and,"),
                    ("What is keratin?", "A fibrous protein (found in hair"),
                    ("What do fronts include?", "and warm fronts"),
                    ("What kind of protein is keratin?", "A fibrous, rope-like protein"),
                    ("What do cold fronts meet?", "The warm fronts they collide with"),
                    ("What lights the night sky more than the stars?", "The Moon, more than the stars do"),
                )
            ],
            LEARNABLE,
        )
    )
    assert cut["reject_reason"].to_list() == ["cut_mid_phrase"] * 3 + [None] * 3, cut["reject_detail"].to_list()
