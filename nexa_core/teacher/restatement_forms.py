"""The offline teacher's restatements: a passage said again by rule, so that the student reads each fact
in more than one form. One fixed text per fact is barely extractable; its paraphrases and sentence
permutations make it so (Allen-Zhu and Li, Physics of Language Models 3.1). Each restatement's `kind`:

  permuted   the passage's sentences in another order; a sentence that leans on the one before it
             ("It ...") stays right after it
  qa_form    the passage's facts as questions with their answers, asked from each side ("What is
             entropy?" and "What is the term for a measure of ...?"): question_forms' pairs
  inverse    the facts stated from their other side: "A measure of ... is called entropy.",
             "Because C, E.", "E results from C."
  cloze      key terms and quantities blanked, each sentence followed by its answer

A passage gets them in that order, then further permutations, up to the count asked; a kind that finds
nothing in the passage (no definition to invert) is passed over. Deterministic: each permutation is drawn
from a generator seeded by the passage's sha256 and the restatement's place, so the same passage always
gives the same restatements. Pure functions over strings (stdlib only), like question_forms.
"""

from __future__ import annotations

import hashlib
import random

from nexa_core.teacher.question_forms import (
    cause_and_effect,
    definition,
    heuristic_pairs,
    sentences,
    split_sentences,
    stands_alone,
)

KINDS = ("permuted", "qa_form", "inverse", "cloze")
_ASKED = ("definition", "reverse_definition", "quantity_question", "cause_effect", "reverse_cause_effect")
_BLANKED = {"cloze": "Fill in the blank: ", "quantity": "Fill in the quantity: "}
MAX_FORMS = 64  # pairs read per passage for the qa_form and cloze restatements


def _units(passage: str) -> list[str]:
    """The passage's sentences, each one that leans on the sentence before it joined to that sentence."""
    units: list[str] = []
    for sentence in split_sentences(passage):
        if units and not stands_alone(sentence):
            units[-1] = f"{units[-1]} {sentence}"
        elif sentence:
            units.append(sentence)
    return units


def permuted(passage: str, index: int) -> str | None:
    """The passage's sentences in an order other than its own, drawn by a generator seeded by the
    passage and `index`; None for a passage of one sentence."""
    units = _units(passage)
    if len(set(units)) < 2:
        return None
    rng = random.Random(f"{hashlib.sha256(passage.encode('utf-8')).hexdigest()}:{index}")
    order = units[:]
    while order == units:  # two different units or more: another order exists, and a shuffle finds it
        rng.shuffle(order)
    return " ".join(order)


def qa_form(passage: str) -> str | None:
    """Every fact the rule set can ask about, as question and answer, from each side."""
    pairs = [p for p in heuristic_pairs(passage, MAX_FORMS) if p["kind"] in _ASKED]
    return "\n".join(f"Question: {p['question']}\nAnswer: {p['answer']}" for p in pairs) or None


def _inverted(sentence: str) -> str | None:
    """The sentence's fact stated from its other side, or None when it states no definition or cause."""
    if found := definition(sentence):
        term, subject, defn, verb = found
        said = f"{defn} {verb} {subject}" if defn.lower().startswith("the ") else f"{defn} {verb} called {subject}"
        return f"{said[:1].upper()}{said[1:]}."
    if found := cause_and_effect(sentence):
        cause, effect, verb = found
        if verb is None:
            return f"Because {cause[:1].lower()}{cause[1:]}, {effect[:1].lower()}{effect[1:]}."
        if sentence.lower().startswith(cause.lower()):  # "C leads to E"
            return f"{effect[:1].upper()}{effect[1:]} results from {cause[:1].lower()}{cause[1:]}."
        return f"{cause[:1].upper()}{cause[1:]} causes {effect[:1].lower()}{effect[1:]}."  # "E results from C"
    return None


def inverse(passage: str) -> str | None:
    """Every definition and cause the passage states, said from its other side."""
    return " ".join(s for s in map(_inverted, sentences(passage)) if s) or None


def cloze(passage: str) -> str | None:
    """The passage's clozes and quantity blanks, each with its answer after it."""
    lines = [
        f"{p['question'].removeprefix(_BLANKED[p['kind']])} Answer: {p['answer']}."
        for p in heuristic_pairs(passage, MAX_FORMS)
        if p["kind"] in _BLANKED
    ]
    return "\n".join(lines) or None


def restatements(passage: str, count: int) -> list[dict]:
    """Up to `count` restatements {"kind", "text"} of the passage, no two alike (see the module docstring)."""
    out: list[dict] = []
    made = {" ".join(passage.split())}  # the passage itself is no restatement
    once = {"qa_form": qa_form, "inverse": inverse, "cloze": cloze}
    for index in range(count):
        for kind in KINDS if index == 0 else ("permuted",):
            if len(out) == count:
                return out
            text = permuted(passage, index) if kind == "permuted" else once[kind](passage)
            if text and text not in made:
                made.add(text)
                out.append({"kind": kind, "text": text})
    return out
