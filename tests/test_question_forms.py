import asyncio
import json
import re

import polars as pl
import pytest
from teacher_frames import teacher_frames

from nexa_core.distill.filters import STOP_WORDS, filter_pairs, form_counts
from nexa_core.distill.prompts import load_template
from nexa_core.teacher import HeuristicTeacher, PairBrief, TeacherUnavailable, parse_pairs
from nexa_core.teacher.question_forms import FORMS, cloze_keys, heuristic_pairs, is_layout_answer, sentences

DEFINITION = "Entropy is a measure of the number of microscopic arrangements of a system."
QUANTITY = "The latent heat of vaporization of water is about 2.26 million joules per kilogram."
CAUSE = "Sweating cools the body because evaporating water absorbs latent heat from the skin."
CLOZE = "Optical fibres carry light over long distances by repeated total internal reflection in the glass core."
LEADS = "Heating a gas in a sealed rigid container leads to a rise in pressure."
PASSAGE = " ".join([DEFINITION, QUANTITY, CAUSE, CLOZE, LEADS])


def by_kind(pairs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for pair in pairs:
        out.setdefault(pair["kind"], []).append(pair)
    return out


def test_each_fact_is_asked_several_ways():
    pairs = heuristic_pairs(PASSAGE, max_pairs=100)
    forms = by_kind(pairs)
    assert set(forms) == set(FORMS)
    # forward and reverse definition of the same term
    assert {
        "question": "What is entropy?",
        "answer": "A measure of the number of microscopic arrangements of a system.",
        "kind": "definition",
    } in pairs
    assert {
        "question": "What is the term for a measure of the number of microscopic arrangements of a system?",
        "answer": "Entropy",
        "kind": "reverse_definition",
    } in pairs
    # the quantity as a cloze and as a direct question
    assert [(p["question"], p["answer"]) for p in forms["quantity"]] == [
        (
            "Fill in the quantity: The latent heat of vaporization of water is ____.",
            "about 2.26 million joules per kilogram",
        )
    ]
    assert forms["quantity_question"][0]["question"] == "What is the latent heat of vaporization of water?"
    # cause -> effect and effect -> cause, for "because" and for "leads to"
    assert {
        "question": "According to the passage, why is it that sweating cools the body?",
        "answer": "Because evaporating water absorbs latent heat from the skin.",
        "kind": "cause_effect",
    } in pairs
    assert {
        "question": "According to the passage, what happens because evaporating water absorbs latent heat from "
        "the skin?",
        "answer": "Sweating cools the body.",
        "kind": "reverse_cause_effect",
    } in pairs
    assert {
        "question": "According to the passage, what does heating a gas in a sealed rigid container lead to?",
        "answer": "A rise in pressure.",
        "kind": "reverse_cause_effect",
    } in pairs
    assert {
        "question": "According to the passage, what leads to a rise in pressure?",
        "answer": "Heating a gas in a sealed rigid container.",
        "kind": "cause_effect",
    } in pairs
    # clozes on two different key terms of one sentence, each blanking exactly its answer
    on_fibres = [
        p for p in forms["cloze"] if p["question"].replace("____", p["answer"]) == f"Fill in the blank: {CLOZE}"
    ]
    assert len({p["answer"] for p in on_fibres}) >= 2
    # answers are short and grounded: every content word is in the passage
    passage_words = set(re.findall(r"\w+", PASSAGE.lower()))
    for pair in pairs:
        words = set(re.findall(r"\w+", pair["answer"].lower())) - set(STOP_WORDS)
        assert words <= passage_words, pair
        assert len(pair["answer"].split()) <= 12, pair


def test_order_is_deterministic_and_covers_facts_before_repeating_them():
    pairs = heuristic_pairs(PASSAGE, max_pairs=16)
    assert pairs == heuristic_pairs("  \n".join(PASSAGE.split(" ")), max_pairs=16)  # whitespace does not matter
    assert heuristic_pairs(PASSAGE, max_pairs=5) == pairs[:5]
    # the first five pairs are the first form of each of the five sentences
    firsts = pairs[:5]
    assert [p["kind"] for p in firsts] == ["definition", "quantity", "cause_effect", "cloze", "reverse_cause_effect"]
    assert len({p["question"] for p in pairs}) == len(pairs)


def test_layout_words_are_never_answers():
    assert all(is_layout_answer(a) for a in ("Figure", "figure 3", "Table 2", "below", "the following", "Section"))
    assert not any(is_layout_answer(a) for a in ("table salt", "Thermal conductivity", "above 100 kelvin"))
    layout = "Measured conductivities are shown in the following equations and sections of chapter four."
    assert cloze_keys(layout) == ["conductivities"]  # the layout words, though long, are not blanks
    pairs = heuristic_pairs(f"{layout} {DEFINITION}", max_pairs=100)
    assert pairs and not [p for p in pairs if is_layout_answer(p["answer"])]


def test_sentences_leaning_on_a_pronoun_are_not_asked():
    passage = "It has a half-life of about 5,730 years. At rest it beats about 70 times per minute in adults."
    assert heuristic_pairs(passage, max_pairs=100) == []
    assert len(sentences(passage)) == 2


def test_feedback_asks_what_the_student_does_not_have():
    corpus = heuristic_pairs(PASSAGE, max_pairs=16)
    known = {p["question"] for p in corpus}
    fresh = heuristic_pairs(PASSAGE, max_pairs=8, known=known)
    assert fresh and not known & {p["question"] for p in fresh}
    # clozes and completions on further key terms, held back from the corpus
    assert {p["kind"] for p in fresh} <= {"cloze", "completion"} and "cloze" in {p["kind"] for p in fresh}
    # A corpus cut short leaves whole forms for the feedback round: the reverse directions come next.
    short = {p["question"] for p in heuristic_pairs(PASSAGE, max_pairs=5)}
    assert "reverse_definition" in {p["kind"] for p in heuristic_pairs(PASSAGE, max_pairs=8, known=short)}


def test_heuristic_teacher_skips_the_known_questions_of_a_feedback_brief():
    known = [p["question"] for p in heuristic_pairs(PASSAGE, max_pairs=16)]
    messages = load_template("feedback_v1").render(
        domain="physics",
        topic="heat",
        passage=PASSAGE,
        max_pairs=6,
        score="0.20",
        metric="token_f1",
        known_questions="\n".join(f"- {q}" for q in known),
    )
    brief = PairBrief(PASSAGE, 6, tuple(known))
    pairs = parse_pairs(asyncio.run(HeuristicTeacher().complete(messages, {}, brief=brief)).text)
    assert 0 < len(pairs) <= 6 and not set(known) & {p["question"] for p in pairs}
    with pytest.raises(TeacherUnavailable, match="passage, max_pairs"):  # nothing to write pairs from
        asyncio.run(HeuristicTeacher().complete(messages, {}))


def frames(pairs: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    return teacher_frames([json.dumps({"pairs": pairs})], PASSAGE)


def test_forms_of_one_fact_survive_the_filters_and_are_counted():
    pairs = heuristic_pairs(PASSAGE, max_pairs=100)
    repeat = {"question": "Define entropy.", "answer": pairs[0]["answer"], "kind": "definition"}
    filtered = filter_pairs(*frames(pairs + [repeat]))
    # Forward and reverse forms, and clozes on two terms of one sentence, share most of their words
    # but are not near duplicates; a reworded question with the same answer in the same form is.
    assert filtered["reject_reason"].to_list() == [None] * len(pairs) + ["near_duplicate"]
    counts = form_counts(filtered)
    assert counts == {kind: len(group) for kind, group in by_kind(pairs).items()}
    assert list(counts)[0] == "cloze" and sum(counts.values()) == len(pairs)


def test_completion_asks_the_statement_up_to_a_key_term():
    from nexa_core.teacher.question_forms import completion_forms, completion_prefix

    sentence = "A laser is a device that produces coherent light by stimulated emission."
    pairs = completion_forms(sentence)
    assert pairs and all(p["kind"] == "completion" for p in pairs)
    by_answer = {p["answer"]: p["question"] for p in pairs}
    assert (
        by_answer["emission"] == "Complete the statement: A laser is a device that produces coherent light by "
        "stimulated ..."
    )
    # the answer is what the statement says next
    assert all(sentence.startswith(completion_prefix(q) + " " + a) for a, q in by_answer.items())
    assert completion_prefix("What is a laser?") is None


def test_unlearnable_sentences_and_terms_yield_no_pairs():
    from nexa_core.teacher.question_forms import definition_forms

    # a pronoun subject behind a subordinate clause, a sentence adverb, an inverted sentence, a question,
    # a term that is a clause, and a term that points back ("An example")
    for sentence in (
        "When it is visible, it is the brightest object in the night sky besides the Moon.",
        "However, near the shore where the water is shallow, the waves behave differently.",
        "Between these two extremes are waves that are commonly called visible light.",
        "Why are algae considered plant-like organisms by many biologists?",
        "The central nervous system includes the brain, which is the body's control center.",
        "An example is the sodium-potassium pump in the membrane of nerve cells.",
    ):
        asked = [
            p for p in heuristic_pairs(sentence, max_pairs=100) if p["kind"] in ("definition", "reverse_definition")
        ]
        assert asked == [], (sentence, asked)
    assert heuristic_pairs("When it is visible, it is the brightest object in the night sky besides the Moon.") == []
    assert heuristic_pairs("Why are algae considered plant-like organisms by many biologists?", max_pairs=100) == []
    # a property is no definition; a plural noun with its preposition is
    assert definition_forms("The simplest carbohydrates are plentiful in fruits and in honey.") == []
    slits = heuristic_pairs("Pharyngeal slits are openings in the pharynx that reach the outside.", 1)
    assert slits[0]["question"] == "What are pharyngeal slits?"
    # the definition itself is still asked of a sentence that names its subject
    assert heuristic_pairs("Keratin is a fibrous protein found in hair and nails.", max_pairs=1)[0] == {
        "kind": "definition",
        "question": "What is keratin?",
        "answer": "A fibrous protein found in hair and nails.",
    }


def test_answers_end_where_their_phrase_ends():
    from nexa_core.teacher.question_forms import completion_forms

    # a definition's answer is not cut inside a list ("hair, nails.")
    listed = heuristic_pairs("Keratin is a fibrous protein that gives hair, nails, and skin their hardness.", 1)
    assert listed[0]["answer"] == "A fibrous protein that gives hair, nails, and skin their hardness."
    # a completion stops on a noun that ends its phrase, never on a modifier before its noun or on a verb
    sentence = "Ligands that interact with cell-surface receptors do not have to enter the target cell."
    answers = {p["answer"] for p in completion_forms(sentence)}
    assert "receptors" in answers and "cell-surface" not in answers and "interact" not in answers
    assert {p["answer"] for p in completion_forms("Types of fronts include cold fronts and warm fronts.")} == set()
    # a pointer at a figure is no part of the fact
    pairs = heuristic_pairs("A barometer is a device that measures atmospheric pressure (Figure 8.11).", 2)
    assert pairs[0]["answer"] == "A device that measures atmospheric pressure." and "Figure" not in pairs[1]["question"]
