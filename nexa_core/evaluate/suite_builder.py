"""A benchmark suite for a domain that has none: its SFT set's held-out questions as multiple choice.

A domain a user adds has no hand-written suite (data/eval/<domain>/), so benchmark_scores builds one from the
SFT set the checkpoint was trained on: each question of the test split (never seen in training; the split is
by document) becomes a 4-way multiple-choice row whose correct choice is that row's own answer, among three
distractors drawn from the other held-out answers of the domain. Nothing from the train split enters the
suite, neither as a question nor as an answer. The draw is seeded by the row, so the same split gives the same
suite on every machine.

The suite is written in the project's own suite format (`<name>.jsonl`, read by load_suites and run by the
same lm-eval runner as a hand-written suite) and, beside it, as a standalone lm-evaluation-harness task
(`lm_eval/<task>.yaml` over its data file, `metadata.version` set) that `lm_eval --include_path` runs as it
is. Its version is a hash of its content: the name (`heldout_<version>`), the lm-eval task name and the
benchmark rows' `suite` column carry it, so a regenerated SFT set whose test split changed makes a new suite,
and the leaderboard and the gate see it as one.

Distractors are chosen by a function of (question, gold, candidates, k, rng): the offline default,
`nearest_in_length`, takes candidates of about the gold's length in words (so a sentence among single words
does not give itself away). A language-model teacher could write better ones: pass a function that asks it
and falls back on the candidates (the seam is `distractors=`; none is wired to the teacher yet).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from nexa_core.evaluate.benchmark import Suite, load_suites, write_tasks
from nexa_core.evaluate.generate import last_turn, reference_answer
from nexa_core.files import write_atomically
from nexa_core.ids import content_id
from nexa_core.metric_registry import squad_normalise

BUILDER = "heldout_mc_v1"  # the rule below; a new rule is a new builder, so every suite it makes is a new version
HELD_OUT = "test"  # the split the suite asks from
CHOICES = 4
SEED = 0
LM_EVAL_FOLDER = "lm_eval"  # beside the suite, not in it: load_suites reads a folder's top level only

# (question, gold, candidate distractors, how many, the row's seeded generator) -> the distractors
Distractors = Callable[[str, str, list[str], int, random.Random], list[str]]


def nearest_in_length(question: str, gold: str, candidates: list[str], k: int, rng: random.Random) -> list[str]:
    """The offline default: k candidates in seeded order, those whose length in words is nearest the gold's first."""
    shuffled = rng.sample(candidates, len(candidates))
    words = len(gold.split())
    return sorted(shuffled, key=lambda c: abs(len(c.split()) - words))[:k]


def wrong_answers(question: str, gold: str, pool: list[str]) -> list[str]:
    """The answers of `pool` that can stand as wrong choices for `gold`: one per normalised text, in pool order,
    none equal to the gold, containing it or contained in it (SQuAD normalisation: "the protons" is "protons",
    and "protons and neutrons" would be half right), none said in the question (ruled out on sight)."""
    right, asked = f" {squad_normalise(gold)} ", f" {squad_normalise(question)} "
    seen, out = set(), []
    for answer in pool:
        norm = squad_normalise(answer)
        if not norm or norm in seen or f" {norm} " in right or right in f" {norm} " or f" {norm} " in asked:
            continue
        seen.add(norm)
        out.append(answer.strip())
    return out


def multiple_choice_rows(
    questions: list[dict],
    *,
    seed: int = SEED,
    choices: int = CHOICES,
    pool: list[str] | None = None,
    distractors: Distractors = nearest_in_length,
) -> list[dict]:
    """Each {id, question, answer, topic?} as a suite row {question, choices, answer, topic?, id}: the answer among
    `choices - 1` distractors from `pool` (default: the questions' own answers), in an order seeded by the seed and
    the row's id. A question with no possible distractor, or an answer that normalises to nothing, is left out."""
    pool = [q["answer"] for q in questions] if pool is None else pool
    rows = []
    for q in questions:
        gold = q["answer"].strip()
        candidates = wrong_answers(q["question"], gold, pool)
        if not squad_normalise(gold) or not candidates:
            continue
        rng = random.Random(content_id(seed, q["id"]))
        picked = distractors(q["question"], gold, candidates, choices - 1, rng)
        if any(squad_normalise(p) == squad_normalise(gold) for p in picked):
            raise ValueError(f"distractor writer {distractors.__name__} gave the gold {gold!r} as a wrong choice")
        options = [gold, *picked]
        rng.shuffle(options)
        row = {"question": q["question"], "choices": options, "answer": gold, "id": q["id"]}
        rows.append(row | ({"topic": q["topic"]} if q.get("topic") else {}))
    return rows


def heldout_questions(sft: pl.DataFrame, domain: str) -> list[dict]:
    """The domain's test-split questions {id, question, answer, topic}, by example id, each question once."""
    rows = sft.filter((pl.col("domain") == domain) & (pl.col("split") == HELD_OUT)).sort("example_id")
    out, seen = [], set()
    for row in rows.iter_rows(named=True):
        question = last_turn(row["messages"], "user")
        answer = reference_answer(row["messages"])  # not the reply's recitation
        if question and answer and question not in seen:
            seen.add(question)
            out.append({"id": row["example_id"], "question": question, "answer": answer, "topic": row["topic"]})
    return out


@dataclass(frozen=True)
class BuiltSuite:
    domain: str
    sft_version: int
    version: str  # hash of the builder and the rows
    rows: list[dict]
    distractors: str  # the function that chose them

    @property
    def name(self) -> str:
        return f"heldout_{self.version}"

    def manifest(self) -> dict:
        return {
            "builder": BUILDER,
            "name": self.name,
            "version": self.version,
            "domain": self.domain,
            "source": f"sft_dataset v{self.sft_version}, {HELD_OUT} split",
            "sft_version": self.sft_version,
            "rows": len(self.rows),
            "distractors": self.distractors,
            "seed": SEED,
        }


def build_heldout_suite(
    sft: pl.DataFrame, domain: str, sft_version: int, distractors: Distractors = nearest_in_length
) -> BuiltSuite | None:
    """The domain's held-out questions as 4-way multiple choice (distractors: the other held-out answers); None
    when the test split has fewer than two different answers."""
    questions = heldout_questions(sft, domain)
    rows = multiple_choice_rows(questions, distractors=distractors)
    if not rows:
        return None
    version = content_id(BUILDER, SEED, CHOICES, distractors.__name__, rows, length=12)
    return BuiltSuite(domain, sft_version, version, rows, distractors.__name__)


def write_built_suite(suite: BuiltSuite, folder: str | Path) -> Path:
    """The suite in `folder` (one per domain, SFT version and suite version: the same content rewrites the same
    bytes): `<name>.jsonl`, `suite.json` (where it came from) and, in lm_eval/, the standalone lm-eval task."""
    if "://" in str(folder):
        raise ValueError(f"a built suite is written to a folder on this machine, not {folder}")
    folder = Path(folder)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in suite.rows)
    write_atomically(folder / f"{suite.name}.jsonl", lambda p: p.write_text(text, encoding="utf-8"))
    manifest = json.dumps(suite.manifest(), indent=2) + "\n"
    write_atomically(folder / "suite.json", lambda p: p.write_text(manifest, encoding="utf-8"))
    (loaded,) = load_suites(folder, suite.domain)  # as the runner will read it: a row it would refuse fails here
    write_lm_eval_task(loaded, suite, folder / LM_EVAL_FOLDER)
    return folder


def write_lm_eval_task(loaded: Suite, suite: BuiltSuite, folder: Path) -> Path:
    """The suite as the runner hands it to lm-eval (plain "Question: ...\\nAnswer:" prompts), with its version
    and origin in the task's metadata; the task file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (task,) = write_tasks([loaded], suite.domain, folder, chat=False, max_gen_toks=0)
    path = folder / f"{task}.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["dataset_kwargs"].pop("cache_dir", None)  # the runner's per-run cache; datasets' own here
    config["metadata"] = suite.manifest()  # lm-eval reports metadata.version as the task's version
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
