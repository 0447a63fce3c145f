import json

import polars as pl
import pytest

from nexa_core import schemas
from nexa_core.delta import DeltaRoot
from nexa_core.distill.prompts import PromptTemplate, load_template
from nexa_core.distill.teacher_inputs import PromptConfig, build_teacher_inputs, chunk_text
from nexa_core.evaluate.feedback import build_feedback_set
from nexa_core.teacher import (
    CollectPolicy,
    HeuristicTeacher,
    TeacherLedger,
    TeacherResponseError,
    collect_responses,
    parse_pairs,
)
from nexa_core.teacher.question_forms import heuristic_pairs

PASSAGE = (
    "Entropy is a measure of the number of microscopic arrangements of a system. "
    "Water boils at 100 degrees Celsius at a pressure of one atmosphere. "
    "Ice floats because it is less dense than liquid water. "
    "Heating a gas at constant volume leads to a rise in its pressure."
)


def test_chunking_keeps_sentences_whole_and_bounded():
    text = "\n\n".join([PASSAGE] * 3 + ["Short one."])
    passages = chunk_text(text, max_chars=300, min_chars=50)
    assert all(len(p) <= 300 for p in passages)
    assert all(p.endswith(".") for p in passages)
    assert " ".join(passages).split() == text.split()  # nothing lost, nothing duplicated


def test_template_renders_and_hash_changes_request_ids(tmp_path):
    template = load_template("qa_pairs_v1")
    messages = template.render(domain="physics", topic="heat", passage=PASSAGE, max_pairs=3)
    assert [m["role"] for m in messages] == ["system", "user"] and PASSAGE in messages[1]["content"]
    docs = pl.DataFrame(
        [
            {
                "domain": "physics",
                "doc_id": "d1",
                "topic": "heat",
                "title": None,
                "text": PASSAGE,
                "source_path": "physics/heat.md",
                "source_row": 0,
                "n_chars": len(PASSAGE),
            }
        ],
        schema=schemas.RAW_DOCUMENTS,
    )
    first = build_teacher_inputs(docs, template)
    again = build_teacher_inputs(docs, template)
    assert first["request_id"].to_list() == again["request_id"].to_list()
    changed = PromptTemplate(name=template.name, system=template.system, user=template.user + " ", sha256="other")
    assert build_teacher_inputs(docs, changed)["request_id"].to_list() != first["request_id"].to_list()
    with pytest.raises(FileNotFoundError, match="qa_pairs_v9"):
        load_template("qa_pairs_v9")


def test_heuristic_teacher_is_deterministic_grounded_and_mixed():
    pairs = heuristic_pairs(PASSAGE, max_pairs=4)
    assert pairs == heuristic_pairs(PASSAGE, max_pairs=4)
    kinds = {p["kind"] for p in pairs}
    assert {"definition", "quantity", "cause_effect"} <= kinds
    definition = next(p for p in pairs if p["kind"] == "definition")
    assert definition["question"] == "What is entropy?"
    assert definition["answer"].startswith("A measure of the number of microscopic arrangements")
    quantity = next(p for p in pairs if p["kind"] == "quantity")
    assert quantity["answer"] == "100 degrees Celsius" and "____" in quantity["question"]
    assert (
        next(p for p in pairs if p["kind"] == "cause_effect")["answer"] == "Because it is less dense than liquid water."
    )


def test_parse_pairs_accepts_fences_and_rejects_garbage():
    assert parse_pairs('```json\n{"pairs": [{"question": "Q?", "answer": "A"}]}\n```')[0]["kind"] == "fact"
    for bad in ("", "Sure! Here you go.", '{"pairs": 3}', '{"pairs": [{"question": "Q?"}]}'):
        with pytest.raises(TeacherResponseError):
            parse_pairs(bad)


def sample_documents(n: int) -> pl.DataFrame:
    """n physics documents on one passage, each with its own last sentence."""
    return pl.DataFrame(
        [
            {
                "domain": "physics",
                "doc_id": f"d{i}",
                "topic": "heat",
                "title": None,
                "text": PASSAGE + f" Sample {i} is here.",
                "source_path": "x",
                "source_row": i,
                "n_chars": 1,
            }
            for i in range(n)
        ],
        schema=schemas.RAW_DOCUMENTS,
    )


def test_collect_uses_cache_and_commits_new_responses(tmp_path):
    template = load_template("qa_pairs_v1")
    docs = sample_documents(5)
    requests = build_teacher_inputs(docs, template)
    store = DeltaRoot(str(tmp_path))
    ledger = TeacherLedger(store, "physics")
    out, stats = collect_responses(
        requests, HeuristicTeacher(), ledger, policy=CollectPolicy(commit_every=2), validate=parse_pairs
    )
    assert stats.new_calls == 5 and stats.cache_hits == 0
    assert store.version("teacher_cache") >= 1  # committed while collecting, not once at the end
    assert out.height == 5 and not out["from_cache"].any() and out["unusable_reason"].is_null().all()
    again, stats = collect_responses(requests, HeuristicTeacher(), ledger)
    assert stats.new_calls == 0 and stats.cache_hits == 5 and again["from_cache"].all()
    assert again["response"].to_list() == out["response"].to_list()
    assert all(json.loads(r)["pairs"] for r in out["response"])
    assert not store.exists("teacher_dispatch")  # the offline teacher costs nothing: no dispatch ledger


def reworded(template: PromptTemplate) -> PromptTemplate:
    """The same fields in other words, between other delimiters."""
    user = (
        template.user.replace('"""', "~~~")
        .replace("up to {max_pairs}", "no more than {max_pairs}")
        .replace("ask different ones:", "do not repeat them:")
    )
    assert user != template.user
    return PromptTemplate(name=template.name, system=template.system, user=user, sha256=f"{template.sha256}-reworded")


def heuristic_answers(requests: pl.DataFrame, root) -> list[list[dict]]:
    outputs, _ = collect_responses(
        requests, HeuristicTeacher(), TeacherLedger(DeltaRoot(str(root)), "physics"), log=lambda message: None
    )
    return [parse_pairs(response) for response in outputs["response"]]


def test_editing_a_templates_wording_leaves_the_heuristic_teachers_pairs_alone(tmp_path):
    docs = sample_documents(3)
    prompt = PromptConfig(max_pairs_per_passage=3)
    corpus = build_teacher_inputs(docs, load_template("qa_pairs_v1"), prompt)
    corpus_again = build_teacher_inputs(docs, reworded(load_template("qa_pairs_v1")), prompt)
    assert corpus["messages"].to_list() != corpus_again["messages"].to_list()
    answers = heuristic_answers(corpus, tmp_path / "corpus")
    assert answers == heuristic_answers(corpus_again, tmp_path / "corpus_again")
    assert all(len(pairs) == 3 for pairs in answers)  # the pair budget, read from the request

    # A feedback round: the student knows the corpus pairs; the teacher must ask other questions.
    known = {p: [pair["question"] for pair in pairs] for p, pairs in zip(corpus["passage_id"], answers)}
    scores = pl.DataFrame(
        {
            "example_id": ["e1"],
            "topic": ["heat"],
            "question": ["What is entropy?"],
            "token_f1": [0.1],
            "judge_status": ["not_configured"],
        }
    )
    weak = (scores, corpus, set(corpus["doc_id"]), known, schemas.empty(schemas.FEEDBACK_SET))
    feedback, _ = build_feedback_set(*weak, load_template("feedback_v1"), 0)
    feedback_again, _ = build_feedback_set(*weak, reworded(load_template("feedback_v1")), 0)
    assert feedback.height == 3 and feedback["messages"].to_list() != feedback_again["messages"].to_list()
    fresh = heuristic_answers(feedback, tmp_path / "feedback")
    assert fresh == heuristic_answers(feedback_again, tmp_path / "feedback_again")
    for pairs, asked in zip(fresh, feedback["known_questions"]):
        assert pairs and not set(asked) & {pair["question"] for pair in pairs}
