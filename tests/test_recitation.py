"""Recite, then answer: the SFT set's replies, and the final answer every scorer reads back out of a reply."""

import polars as pl
import pytest

from nexa_core import schemas
from nexa_core.distill.recitation import ANSWER_MARK, final_answer, recited, source_sentence, split_reply
from nexa_core.distill.sft import SplitConfig, build_sft_dataset
from nexa_core.evaluate.generate import predictions_frame
from nexa_core.evaluate.suite_builder import heldout_questions

SENTENCES = [
    "A polymer is a large molecule made of many repeating units called monomers.",
    "Fermentation is a process in which yeast converts glucose into ethanol and carbon dioxide.",
    "Bread rises because the carbon dioxide produced by fermentation forms bubbles in the dough.",
]
PASSAGE = " ".join(SENTENCES)


@pytest.mark.parametrize(
    "question, answer, expected",
    [
        ("Complete the statement: A polymer is a large ...", "molecule", 0),
        ("What is the term for a large molecule made of many repeating units called monomers?", "polymer", 0),
        ("Fill in the blank: Fermentation is a process in which yeast ____ glucose into ethanol.", "converts", 1),
        ("According to the passage, why is it that bread rises?", "Because the carbon dioxide forms bubbles.", 2),
        # "fermentation" is in two sentences: the one that also shares the question's words states this fact
        ("What forms bubbles in the dough?", "the carbon dioxide produced by fermentation", 2),
    ],
)
def test_the_recitation_is_the_sentence_that_states_the_fact(question, answer, expected):
    assert source_sentence(question, answer, PASSAGE) == SENTENCES[expected]


def test_no_sentence_holds_the_answer_no_recitation():
    assert source_sentence("What is the speed of light?", "299,792 km per second", PASSAGE) is None
    assert source_sentence("What is a polymer?", "A large molecule.", None) is None
    assert recited(None, "molecule") == "molecule"


def test_a_reply_splits_into_its_recitation_and_its_final_answer():
    reply = recited("A polymer is a large molecule made of many repeating units.", "molecule")
    assert reply == f"A polymer is a large molecule made of many repeating units.\n{ANSWER_MARK} molecule"
    assert split_reply(reply) == ("A polymer is a large molecule made of many repeating units.", "molecule")
    assert split_reply("just an answer") == (None, "just an answer")
    # the mark counts at a line's start only, and the last one wins
    assert final_answer("The Answer: is not a mark here") == "The Answer: is not a mark here"
    assert final_answer("one\nAnswer: first\nAnswer: second ") == "second"
    assert split_reply("Answer: alone") == (None, "alone")


def pairs(passage=PASSAGE):
    rows = [
        {
            "domain": "chemistry",
            "pair_id": f"p{d}-{q}",
            "request_id": "r",
            "doc_id": f"doc{d}",
            "passage_id": f"doc{d}",
            "topic": "polymers",
            "source_path": "s",
            "kind": "cloze",
            "question": "Complete the statement: A polymer is a large ...",
            "answer": "molecule",
            "passage": passage,
            "pii_scrubbed": False,
            "reject_reason": None,
            "reject_detail": None,
        }
        for d in range(6)
        for q in range(2)
    ]
    return pl.DataFrame(rows, schema=schemas.FILTERED_PAIRS)


def replies(sft: pl.DataFrame) -> list[str]:
    return [m[-1]["content"] for m in sft["messages"].to_list()]


def test_the_sft_set_recites_by_default_and_gives_bare_answers_when_told():
    recite = build_sft_dataset(pairs())
    assert set(replies(recite)) == {f"{SENTENCES[0]}\n{ANSWER_MARK} molecule"}
    assert set(replies(build_sft_dataset(pairs(), SplitConfig(recite=False)))) == {"molecule"}
    assert set(replies(build_sft_dataset(pairs(passage=None)))) == {"molecule"}  # no passage: nothing to recite
    # every split is written the same way, and the splits do not move
    assert recite["split"].to_list() == build_sft_dataset(pairs(), SplitConfig(recite=False))["split"].to_list()


def test_answers_and_the_built_suite_score_the_final_answer_not_the_recitation():
    sft = build_sft_dataset(pairs())
    test = sft.filter(pl.col("split") == "test")
    answers = [
        {"prediction": "A polymer is a large chain.\nAnswer: chain", "prompt_tokens": 30, "new_tokens": 12},
        {"prediction": "molecule", "prompt_tokens": 30, "new_tokens": 2},
    ][: test.height]
    frame = predictions_frame("student", test.head(len(answers)), answers)
    assert frame["reference"].to_list() == ["molecule"] * len(answers)
    assert frame["prediction"].to_list() == ["chain", "molecule"][: len(answers)]
    assert frame["recitation"].to_list() == ["A polymer is a large chain.", None][: len(answers)]
    assert {q["answer"] for q in heldout_questions(sft, "chemistry")} == {"molecule"}
