"""The suite built for a domain without one: the SFT set's held-out questions as multiple choice, gold answers from
the held-out split only, distractors drawn from the other held-out answers (never the gold), seeded, versioned by
content, and a task lm-evaluation-harness loads as it is. (Run by the suite runner, and read by the gate:
tests/test_benchmark.py.)"""

import json
import random

import polars as pl
import pytest

from nexa_core import schemas
from nexa_core.evaluate.benchmark import MULTIPLE_CHOICE, load_suites
from nexa_core.evaluate.suite_builder import (
    LM_EVAL_FOLDER,
    build_heldout_suite,
    multiple_choice_rows,
    nearest_in_length,
    write_built_suite,
)
from nexa_core.metric_registry import squad_normalise

DOMAIN = "geology"
SYSTEM = {"role": "system", "content": "You are an expert in geology. Answer accurately and concisely."}
# (question, answer, split): train answers are words no held-out row has, so a leak would show
PAIRS = [
    ("Which rock forms when lava cools quickly at the surface?", "basalt", "test"),
    ("What is molten rock below the surface called?", "magma", "test"),
    ("Which mineral scratches every other mineral?", "diamond", "test"),
    ("What do we call a crack along which rocks have moved?", "a fault", "test"),
    ("Which layer of the Earth lies below the crust?", "the mantle", "test"),
    ("What is the slow wearing away of rock by weather called?", "weathering", "test"),
    ("How do geologists name rock that formed from layers of sediment?", "sedimentary rock", "test"),
    ("What is the outermost solid layer of the Earth called?", "crust", "test"),
    ("Which rock is made from compressed sand grains?", "sandstone", "train"),
    ("Which soft mineral is number one on the hardness scale?", "talc", "train"),
    ("What forms when limestone is heated and squeezed?", "marble", "train"),
    ("What carries sediment down a valley?", "a river", "train"),
    ("What are large moving slabs of the lithosphere called?", "tectonic plates", "validation"),
]
TRAIN_ANSWERS = {squad_normalise(a) for _, a, split in PAIRS if split != "test"}


def sft_frame(pairs=PAIRS, domain: str = DOMAIN) -> pl.DataFrame:
    rows = [
        {
            "domain": domain,
            "example_id": f"ex{i:03d}",
            "pair_id": f"p{i}",
            "doc_id": f"d{i // 2}",
            "topic": "rocks" if i % 2 else "earth",
            "split": split,
            "messages": [SYSTEM, {"role": "user", "content": q}, {"role": "assistant", "content": a}],
            "round": 0,
            "feedback_round": None,
        }
        for i, (q, a, split) in enumerate(pairs)
    ]
    return pl.DataFrame(rows, schema=schemas.SFT_DATASET)


def test_gold_answers_come_from_the_held_out_split_and_distractors_are_other_held_out_answers():
    other = sft_frame(domain="physics").with_columns(pl.col("example_id") + "p")  # another domain's rows too
    suite = build_heldout_suite(pl.concat([sft_frame(), other]), DOMAIN, sft_version=3)
    held_out = {q: a for q, a, split in PAIRS if split == "test"}
    assert [r["question"] for r in suite.rows] == list(held_out)  # every held-out question once, no train question
    assert suite.name == f"heldout_{suite.version}" and suite.sft_version == 3
    for row in suite.rows:
        gold = row["answer"]
        assert gold == held_out[row["question"]] and gold in row["choices"]  # the row's own answer
        assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
        wrong = [c for c in row["choices"] if c != gold]
        assert all(squad_normalise(c) != squad_normalise(gold) for c in wrong)
        assert set(wrong) <= set(held_out.values())  # drawn from the other held-out answers
        assert not {squad_normalise(c) for c in row["choices"]} & TRAIN_ANSWERS  # nothing from train
    positions = {row["choices"].index(row["answer"]) for row in suite.rows}
    assert len(positions) > 1  # the gold is not always in the same place


def test_the_suite_is_seeded_and_versioned_by_its_content():
    first, again = build_heldout_suite(sft_frame(), DOMAIN, 0), build_heldout_suite(sft_frame(), DOMAIN, 5)
    assert first.rows == again.rows and first.version == again.version  # the same split: the same suite
    changed = [*PAIRS[:-1], ("Which rock floats on water?", "pumice", "test")]
    regenerated = build_heldout_suite(sft_frame(changed), DOMAIN, 6)
    assert regenerated.version != first.version  # a regenerated SFT set with a new test split: a new suite
    assert "pumice" in {r["answer"] for r in regenerated.rows}


def test_distractors_never_equal_contain_or_repeat_the_gold():
    questions = [
        {"id": "1", "question": "What holds the nucleus together?", "answer": "the strong force"},
        {"id": "2", "question": "What is it called?", "answer": "Strong force"},  # the same answer, other form
        {"id": "3", "question": "What is stronger than gravity?", "answer": "strong force and more"},  # contains it
        {"id": "4", "question": "What does a magnet attract?", "answer": "iron"},
        {"id": "5", "question": "What carries charge?", "answer": "electrons"},
        {"id": "6", "question": "What is gravity?", "answer": "gravity"},  # said in question 3: not its distractor
    ]
    rows = {r["id"]: r for r in multiple_choice_rows(questions, seed=1)}
    assert set(rows["1"]["choices"]) == {"the strong force", "iron", "electrons", "gravity"}
    assert "gravity" not in rows["3"]["choices"] and len(rows["3"]["choices"]) == 3
    lone = [{"id": "x", "question": "Q?", "answer": "a"}, {"id": "y", "question": "R?", "answer": "b"}]
    assert multiple_choice_rows(lone) == []  # "a" normalises to nothing; "b" has no other answer to stand beside it

    def writes_the_gold(question, gold, candidates, k, rng):
        return [gold.upper(), *candidates[: k - 1]]

    with pytest.raises(ValueError, match="gave the gold"):
        multiple_choice_rows(questions, distractors=writes_the_gold)


def test_a_distractor_writer_is_a_seam_the_builder_calls_with_the_candidates():
    seen = []

    def longest_first(question, gold, candidates, k, rng):  # as a teacher's writer would, given the candidates
        seen.append((question, gold, list(candidates)))
        return sorted(candidates, key=len, reverse=True)[:k]

    suite = build_heldout_suite(sft_frame(), DOMAIN, 0, distractors=longest_first)
    assert len(seen) == len(suite.rows) and all(gold not in cands for _, gold, cands in seen)
    assert suite.distractors == "longest_first" and suite.version != build_heldout_suite(sft_frame(), DOMAIN, 0).version
    default = nearest_in_length("Q?", "one word", ["a b", "c", "d e f g", "h i"], 2, random.Random(0))
    assert sorted(default) == ["a b", "h i"]  # the candidates nearest the gold's length in words


def test_the_written_suite_is_read_by_the_runner_and_is_a_valid_lm_eval_task(tmp_path):
    from lm_eval.tasks import TaskManager

    suite = build_heldout_suite(sft_frame(), DOMAIN, 2)
    folder = write_built_suite(suite, tmp_path / DOMAIN / f"suite-v2-{suite.version}")
    (loaded,) = load_suites(folder, DOMAIN)  # the runner's own reading: one suite, multiple choice
    assert loaded.name == suite.name and loaded.kinds == [MULTIPLE_CHOICE] and loaded.items.height == len(suite.rows)
    manifest = json.loads((folder / "suite.json").read_text())
    assert manifest["version"] == suite.version and manifest["source"] == "sft_dataset v2, test split"
    manager = TaskManager(include_path=str(folder / LM_EVAL_FOLDER), include_defaults=False)
    name = f"nexa_{DOMAIN}_heldout_{suite.version}_mc"
    assert name in manager.all_tasks
    task = manager.load([name])["tasks"][name]
    assert task.VERSION == suite.version and task.OUTPUT_TYPE == "multiple_choice"
    docs = list(task.eval_docs)
    assert len(docs) == len(suite.rows)
    for doc, row in zip(docs, suite.rows):
        assert task.doc_to_choice(doc) == row["choices"]
        assert task.doc_to_choice(doc)[task.doc_to_target(doc)] == row["answer"]
    with pytest.raises(ValueError, match="a folder on this machine"):
        write_built_suite(suite, "s3://bucket/artifacts/geology/suite")
