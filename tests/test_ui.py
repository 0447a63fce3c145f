"""nexa-ui, the inspection app: its queries and every page run by Streamlit's AppTest against a small Delta root
built here from the graph's schemas (physics in two rounds: documents, a quarantine, teacher requests and pairs
with rejections, an SFT set with feedback rows, answers of three roles, suites, a release; chemistry with documents
only), the command started on a port and stopped by its PID, and the asset links of the code location."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from conftest import PROJECT, stop_by_pid
from test_imports import import_graph

from nexa_core import schemas
from nexa_core import tables as t
from nexa_core.delta import DeltaRoot, write_partition
from nexa_core.evaluate.leaderboard import ranked_schema
from nexa_ui import links, queries
from nexa_ui.queries import Partition
from nexa_ui.settings import UiSettings

APP = PROJECT / "nexa_ui" / "app.py"
T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
DAGSTER = "http://dagster.example:3000"


# --- the demo root ---------------------------------------------------------------------------------------------


def frame(schema: dict, rows: list[dict]) -> pl.DataFrame:
    """Rows in a table's schema; a column a row leaves out is null."""
    return pl.DataFrame([{name: row.get(name) for name in schema} for row in rows], schema=schema)


def put(root: DeltaRoot, table: str, schema: dict, rows: list[dict], domain: str | None = "physics") -> int:
    """Replace `domain`'s partition of `table` (the whole table when None), as the IO manager does."""
    parts = {"domain": [domain]} if domain else {}
    return write_partition(root.uri(table), frame(schema, rows), parts, None, table)


def add(root: DeltaRoot, table: str, schema: dict, rows: list[dict]) -> int:
    """Append to a history table, as the side tables are written."""
    return root.append(table, frame(schema, rows))


DOCS = [
    ("d1", "optics", "optics.jsonl", "Refraction", "Light bends when it enters glass because it slows down."),
    ("d2", "optics", "optics.jsonl", "Lenses", "A convex lens focuses parallel rays to a focal point."),
    ("d3", "mechanics", "mechanics.md", "Inertia", "A body keeps its velocity unless a net force acts on it."),
]


def _requests(round_: int) -> list[dict]:
    rows = [
        {
            "domain": "physics",
            "request_id": f"r{round_}-{doc}",
            "doc_id": doc,
            "passage_id": f"p-{doc}",
            "topic": topic,
            "source_path": path,
            "passage": text,
            "template_name": "qa_pairs_v1",
            "template_hash": "tmplsha1",
            "messages": json.dumps([{"role": "user", "content": f"Write pairs about: {text}"}]),
            "max_pairs": 4,
        }
        for doc, topic, path, _, text in DOCS
    ]
    if round_:  # round 1 mixes in a request of round 0's feedback set
        rows.append(rows[0] | {"request_id": "fb-d1", "feedback_round": 0, "known_questions": ["Why does light bend?"]})
    return rows


def _responses(requests: list[dict]) -> list[dict]:
    return [
        {
            "domain": "physics",
            "request_id": r["request_id"],
            "request_hash": "h" + r["request_id"],
            "model": "heuristic-v1",
            "backend": "heuristic",
            "response": json.dumps({"pairs": [{"question": "Q", "answer": "A"}]}),
            "finish_reason": "stop",
            "attempts": 1,
            "via": "sync",
            "prompt_tokens": 40 + i,
            "completion_tokens": 20,
            "latency_s": 0.01,
            "cost_usd": 0.0015,
            "from_cache": i == 0,  # one cache hit
        }
        for i, r in enumerate(requests)
    ]


# (request, pair id, question, answer, reject reason, detail): 2 kept, too_short 1, ungrounded 2, near_duplicate 1
PAIRS = [
    ("d1", "q1", "Why does light bend when it enters glass?", "because it slows down", None, None),
    ("d1", "q2", "Bend?", "yes", "too_short", "question 5 chars < 12"),
    ("d1", "q3", "What colour is the sky over the glass?", "blue", "ungrounded", "grounding 0.00 < 0.6"),
    ("d2", "q4", "What does a convex lens do to parallel rays?", "focuses them to a focal point", None, None),
    ("d2", "q5", "What does a convex lens do with parallel rays?", "focuses them", "near_duplicate", "of q4"),
    ("d3", "q6", "What does a body keep without a net force?", "its mass and colour", "ungrounded", "grounding 0.33"),
]


def _pairs(round_: int) -> list[dict]:
    rows = [
        {
            "domain": "physics",
            "pair_id": f"{pair}",
            "request_id": f"r{round_}-{doc}",
            "doc_id": doc,
            "passage_id": f"p-{doc}",
            "topic": next(d[1] for d in DOCS if d[0] == doc),
            "kind": "definition",
            "question": q,
            "answer": a,
            "pii_scrubbed": False,
            "reject_reason": reason,
            "reject_detail": detail,
        }
        for doc, pair, q, a, reason, detail in PAIRS
    ]
    if round_:
        rows.append(rows[0] | {"pair_id": "qf", "request_id": "fb-d1", "question": "What slows light in glass?"})
    return rows


def _sft(round_: int, pairs: list[dict]) -> list[dict]:
    split = {"d1": "train", "d2": "train", "d3": "test"}
    return [
        {
            "domain": "physics",
            "example_id": f"e{round_}-{p['pair_id']}",
            "pair_id": p["pair_id"],
            "doc_id": p["doc_id"],
            "topic": p["topic"],
            "split": split[p["doc_id"]],
            "messages": [{"role": "user", "content": p["question"]}, {"role": "assistant", "content": p["answer"]}],
            "round": round_,
            "feedback_round": 0 if p["pair_id"] == "qf" else None,
        }
        for p in pairs
        if p["reject_reason"] is None or p["doc_id"] == "d3"  # d3's pair stands in for a test item
    ]


# (example, topic, question, gold, {role: (prediction, token_f1, contains)}); round 1 adds the base-right miss
ITEMS = [
    (
        "x1",
        "optics",
        "Why does light bend when it enters glass?",
        "it slows down",
        {
            "student": ("it slows down", 1.0, 1.0),
            "read": ("light bends in glass", 0.0, 0.0),
            "base": ("gravity", 0.0, 0.0),
        },
    ),
    (
        "x2",
        "optics",
        "What focuses parallel rays to a focal point?",
        "a convex lens",
        {"student": ("a mirror", 0.0, 0.0), "read": ("a lens", 0.667, 0.0), "base": ("the sun", 0.0, 0.0)},
    ),
    (
        "x3",
        "mechanics",
        "What keeps its velocity unless a net force acts on it?",
        "a body",
        {"student": ("a body does", 0.667, 1.0), "read": ("velocity", 0.0, 0.0), "base": ("nothing", 0.0, 0.0)},
    ),
]
BASE_RIGHT = (
    "x4",
    "mechanics",
    "What changes a body's velocity?",
    "a net force",
    {"student": ("gravity only", 0.0, 0.0), "read": ("a force", 0.667, 0.0), "base": ("a net force does", 0.8, 1.0)},
)


def _scores(round_: int) -> list[dict]:
    rows = []
    for example, topic, question, gold, answers in ITEMS + ([BASE_RIGHT] if round_ else []):
        for role, (prediction, f1, hit) in answers.items():
            rows.append(
                {
                    "domain": "physics",
                    "round": round_,
                    "checkpoint_id": f"ck{round_}",
                    "sft_version": round_,
                    "model_role": role,
                    "example_id": example,
                    "topic": topic,
                    "question": question,
                    "reference": gold,
                    "prediction": prediction,
                    "exact_match": float(prediction == gold),
                    "token_f1": f1,
                    "rouge_l": f1,
                    "contains": hit,
                    "judge_status": "not_configured",
                }
            )
    return rows


TOPIC_F1 = {
    "student": {"__all__": 0.6, "optics": 0.5, "mechanics": 0.7},
    "read": {"__all__": 0.3, "optics": 0.35, "mechanics": 0.25},
    "base": {"__all__": 0.2, "optics": 0.1},
}


def _history(round_: int, stamp: datetime) -> list[dict]:
    return [
        {
            "domain": "physics",
            "round": round_,
            "checkpoint_id": f"ck{round_}",
            "sft_version": round_,
            "model_role": role,
            "topic": topic,
            "metric": "token_f1",
            "mean": mean + 0.1 * round_,
            "ci_low": mean + 0.1 * round_ - 0.05,
            "ci_high": mean + 0.1 * round_ + 0.05,
            "n": 3,
            "created_at": stamp,
        }
        for role, topics in TOPIC_F1.items()
        for topic, mean in topics.items()
    ]


CHOICES = ["refraction", "reflection", "diffraction"]


def _benchmark(round_: int) -> tuple[list[dict], list[dict]]:
    picks = {"student": "refraction", "read": "reflection", "base": "diffraction"}
    scores = [
        {
            "domain": "physics",
            "round": round_,
            "checkpoint_id": f"ck{round_}",
            "model_role": role,
            "suite": "optics_mc",
            "source": "optics_mc.jsonl",
            "row": 1,
            "item_id": "mc1",
            "kind": "multiple_choice",
            "topic": "optics",
            "question": "Light bending at a boundary is called?",
            "choices": CHOICES,
            "reference": "refraction",
            "prediction": pick,
            "n_choices": 3,
            "accuracy": float(pick == "refraction"),
        }
        for role, pick in picks.items()
    ]
    history = [
        {
            "domain": "physics",
            "round": round_,
            "checkpoint_id": f"ck{round_}",
            "model_role": role,
            "suite": suite,
            "topic": "__all__",
            "metric": "accuracy",
            "mean": mean,
            "ci_low": max(0.0, mean - 0.3),
            "ci_high": min(1.0, mean + 0.3),
            "n": 1,
            "chance": 1 / 3,
            "created_at": T0,
        }
        for role, mean in (("student", 1.0), ("base", 0.0))
        for suite in ("optics_mc", "__all__")
    ]
    return scores, history


def _ranked(rounds: int) -> list[dict]:
    return [
        {
            "rank": rounds - r,
            "domain_rank": rounds - r,
            "domain": "physics",
            "round": r,
            "checkpoint_id": f"ck{r}",
            "sft_version": r,
            "primary_metric": "token_f1",
            "score": 0.6 + 0.1 * r,
            "ci_low": 0.55 + 0.1 * r,
            "ci_high": 0.65 + 0.1 * r,
            "n": 3,
            "base_score": 0.2,
            "lift": 0.4 + 0.1 * r,
        }
        for r in range(rounds)
    ]


CARD = "# physics-expert v1\n\nTrained on **physics** round 0. The gate: promoted."


def _release(sft_version: int) -> dict:
    return {
        "domain": "physics",
        "release_id": "rel-1",
        "registered_model": "nexa-physics",
        "model_version": 1,
        "served_model": "nexa-physics-v1",
        "checkpoint_id": "ck0",
        "round": 0,
        "sft_version": sft_version,
        "metric": "token_f1",
        "score": 0.6,
        "ci_low": 0.55,
        "ci_high": 0.65,
        "base_score": 0.2,
        "gate": json.dumps(
            {"metric": "token_f1", "rule": "intervals", "reasons": ["beats its base by 0.30 (intervals)"]}
        ),
        "lineage": json.dumps([{"table": "sft_dataset", "version": sft_version}]),
        "model_card": CARD,
        "released_at": T0,
    }


def build_demo_root(path: Path) -> DeltaRoot:
    """physics in two rounds (round 0 released), chemistry with documents only, written as the graph writes."""
    root = DeltaRoot(str(path))
    for domain, docs in (("physics", DOCS), ("chemistry", [("c1", "bonds", "bonds.txt", "Bonds", "Atoms bond.")])):
        documents = [
            {"domain": domain, "doc_id": d, "topic": tp, "title": ti, "text": tx, "source_path": sp, "source_row": i}
            | {"n_chars": len(tx)}
            for i, (d, tp, sp, ti, tx) in enumerate(docs)
        ]
        put(root, t.RAW_DOCUMENTS, schemas.RAW_DOCUMENTS, documents, domain)
    quarantined = [
        {"source_path": "broken.jsonl", "source_row": 3, "reason": "wrong_schema", "detail": "no 'text' field"},
        {"source_path": "empty.txt", "source_row": 0, "reason": "empty", "detail": "0 characters"},
    ]
    put(root, t.RAW_QUARANTINE, schemas.RAW_QUARANTINE, [r | {"domain": "physics"} for r in quarantined])
    put(root, t.RAW_QUARANTINE, schemas.RAW_QUARANTINE, [], "chemistry")
    for round_ in (0, 1):
        requests = _requests(round_)
        put(root, t.TEACHER_INPUTS, schemas.TEACHER_INPUTS, requests)
        put(root, t.TEACHER_OUTPUTS, schemas.TEACHER_OUTPUTS, _responses(requests))
        pairs = _pairs(round_)
        put(root, t.FILTERED_PAIRS, schemas.FILTERED_PAIRS, pairs)
        sft_version = put(root, t.SFT_DATASET, schemas.SFT_DATASET, _sft(round_, pairs))
        checkpoint = {"domain": "physics", "checkpoint_id": f"ck{round_}", "round": round_, "sft_version": sft_version}
        put(root, t.STUDENT_CHECKPOINT, schemas.STUDENT_CHECKPOINT, [checkpoint])
        add(root, t.CHECKPOINT_HISTORY, schemas.STUDENT_CHECKPOINT, [checkpoint])
        put(root, t.EVAL_METRICS, schemas.EVAL_SCORES, _scores(round_))
        add(root, t.EVAL_HISTORY, schemas.EVAL_HISTORY, _history(round_, T0 + timedelta(hours=round_)))
        scores, history = _benchmark(round_)
        put(root, t.BENCHMARK_SCORES, schemas.BENCHMARK_SCORES, scores)
        add(root, t.BENCHMARK_HISTORY, schemas.BENCHMARK_HISTORY, history)
        put(root, t.LEADERBOARD, ranked_schema(), _ranked(round_ + 1), None)
        feedback = requests[0] | {"request_id": "fb-d1", "round": 0, "reason": "topic 'optics': mean token_f1 0.500"}
        put(root, t.FEEDBACK_SET, schemas.FEEDBACK_SET, [feedback | {"metric": "token_f1", "topic_score": 0.5}])
        if round_ == 0:
            put(root, t.MODEL_RELEASE, schemas.MODEL_RELEASE, [_release(sft_version)])
            add(root, t.RELEASE_HISTORY, schemas.MODEL_RELEASE, [_release(sft_version)])
    return root


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DeltaRoot:
    return build_demo_root(tmp_path_factory.mktemp("ui") / "delta")


# --- the queries, without Streamlit ----------------------------------------------------------------------------


def test_queries_count_verdicts_page_through_and_travel_back_to_a_round(demo):
    part = Partition(demo, "physics")
    assert queries.domains(demo) == ["chemistry", "physics"]
    verdicts = dict(queries.reason_counts(part).iter_rows())
    assert verdicts == {"kept": 3, "too_short": 1, "ungrounded": 2, "near_duplicate": 1}  # round 1: 2 + feedback
    assert list(verdicts)[:2] == ["kept", "too_short"]  # the filters' order, not the counts'
    requests = queries.teacher_requests(part)  # 4 in round 1: three from the corpus, one from the feedback set
    second = queries.page(requests, 2, size=3)
    assert (second.total, second.number, second.pages, second.first, second.rows.height) == (4, 2, 2, 4, 1)
    assert queries.page(requests, 9, size=3).number == 2  # past the end: the last page
    assert queries.verdicts("ungrounded")["too_short"] == "pass"
    assert queries.verdicts("ungrounded")["ungrounded"] == "REJECT"
    assert queries.verdicts("ungrounded")["near_duplicate"] == "-"

    rounds = queries.rounds(demo, "physics")
    assert rounds["round"].to_list() == [1, 0] and rounds["as_of"][0] is None
    then = Partition(demo, "physics", rounds["as_of"][1])
    evaluated = queries.evaluation(then)
    assert (evaluated["checkpoint_id"], evaluated["round"], evaluated["items"]) == ("ck0", 0, 3)
    assert evaluated["roles"] == ["student", "read", "base"]
    assert queries.count(queries.teacher_requests(then)) == 3  # round 0 had no feedback request
    assert queries.evaluation(part)["checkpoint_id"] == "ck1"
    with pytest.raises(queries.NotThere, match="teacher_inputs has no rows for domain chemistry"):
        queries.teacher_requests(Partition(demo, "chemistry"))


# --- every page, run by Streamlit ------------------------------------------------------------------------------


def open_app(root: Path | DeltaRoot, monkeypatch, domain: str | None = "physics", page: str | None = None):
    """The app as nexa-ui starts it (its settings as the script's arguments), on `domain`'s `page`."""
    from streamlit.testing.v1 import AppTest

    uri = root.root_uri if isinstance(root, DeltaRoot) else str(root)
    monkeypatch.setattr(sys, "argv", [str(APP), *UiSettings(uri, DAGSTER).argv()])
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    if domain:
        at.selectbox(key="domain").set_value(domain).run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    return at


def shown(at) -> str:
    """Everything the page says in text (markdown, captions, info and error boxes, titles)."""
    parts = [*at.title, *at.subheader, *at.markdown, *at.caption, *at.info, *at.success, *at.error, *at.text]
    return "\n".join(str(p.value) for p in parts)


def table(at, *columns: str) -> pl.DataFrame:
    """The one table on the page that has these columns."""
    found = [pl.from_pandas(d.value) for d in at.dataframe if set(columns) <= set(d.value.columns)]
    assert len(found) == 1, f"{len(found)} tables with columns {columns}"
    return found[0]


def charts(at) -> list[pl.DataFrame]:
    """The data of each chart on the page (Vega-Lite datasets, as Arrow)."""
    return [
        pl.from_arrow(pa.ipc.open_stream(data.data.data).read_all())
        for chart in at.get("vega_lite_chart")
        for data in chart.proto.datasets
    ]


def no_traceback(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_documents_page_counts_files_and_topics_and_shows_the_quarantine_and_a_document(demo, monkeypatch):
    at = open_app(demo, monkeypatch, page="documents")
    no_traceback(at)
    counts = table(at, "source_path", "topic", "documents")
    assert counts.select("source_path", "topic", "documents").rows() == [
        ("mechanics.md", "mechanics", 1),
        ("optics.jsonl", "optics", 2),
    ]
    assert dict(table(at, "reason", "rows").rows()) == {"wrong_schema": 1, "empty": 1}
    assert "no 'text' field" in table(at, "source_path", "reason", "detail")["detail"].to_list()
    documents = at.selectbox(key="document")
    documents.select_index(next(i for i, label in enumerate(documents.options) if label.endswith("(d2)"))).run()
    assert "A convex lens focuses parallel rays to a focal point." in [t.value for t in at.text]
    assert f"{DAGSTER}/assets/raw_quarantine?partition=physics" in shown(at)


def test_teacher_page_shows_the_verdicts_and_a_request_with_its_response_and_pairs(demo, monkeypatch):
    at = open_app(demo, monkeypatch, page="teacher")
    no_traceback(at)
    assert dict(table(at, "verdict", "pairs").rows()) == {
        "kept": 3,
        "too_short": 1,
        "ungrounded": 2,
        "near_duplicate": 1,
    }
    assert {m.label: m.value for m in at.metric}["cache hits"] == "1"
    assert dict(charts(at)[0].select("verdict", "pairs").rows())["ungrounded"] == 2
    at.selectbox(key="verdict").set_value("ungrounded").run()
    rejected = table(at, "verdict", "request_id", "question")
    assert rejected["question"].to_list() == [
        "What colour is the sky over the glass?",
        "What does a body keep without a net force?",
    ]
    at.selectbox(key="request").set_value("r1-d1").run()
    no_traceback(at)
    pairs = table(at, "question", "verdict", "pii_scrubbed")
    row = pairs.filter(pl.col("verdict") == "ungrounded").row(0, named=True)
    assert (row["too_short"], row["ungrounded"], row["near_duplicate"]) == ("pass", "REJECT", "-")
    assert pairs.filter(pl.col("verdict") == "too_short")["reject_detail"].to_list() == ["question 5 chars < 12"]
    said = shown(at)
    assert "qa_pairs_v1" in said and "Light bends when it enters glass because it slows down." in [
        t.value for t in at.text
    ]
    response = dict(table(at, "", "value").rows())
    assert (response["prompt tokens"], response["cost (USD)"], response["cache hit"]) == ("40", "0.0015", "True")


def test_sft_page_shows_splits_documents_and_why_feedback_rows_were_added(demo, monkeypatch):
    at = open_app(demo, monkeypatch, page="sft")
    no_traceback(at)
    counts = table(at, "round", "split", "topic", "examples")
    assert counts.select("round", "split", "topic", "examples").rows() == [
        (1, "test", "mechanics", 1),
        (1, "train", "optics", 3),
    ]
    assert table(at, "doc_id", "split", "examples").select("doc_id", "examples").rows() == [
        ("d3", 1),
        ("d1", 2),
        ("d2", 1),
    ]
    added = table(at, "example_id", "feedback_round", "reason")
    assert added.select("example_id", "question", "reason").rows() == [
        ("e1-qf", "What slows light in glass?", "topic 'optics': mean token_f1 0.500")
    ]


def test_answers_page_puts_three_roles_side_by_side_filters_the_misses_and_charts_topics(demo, monkeypatch):
    at = open_app(demo, monkeypatch, page="answers")
    no_traceback(at)
    answers = table(at, "question", "reference", "student", "read", "base")
    assert answers.columns[:7] == ["example_id", "topic", "question", "reference", "student", "read", "base"]
    assert answers.columns[7:] == [f"{role}_{s}" for s in ("f1", "contains") for role in ("student", "read", "base")]
    assert answers["example_id"].to_list() == ["x3", "x4", "x1", "x2"]  # by topic
    at.radio(key="answers_view").set_value("misses").run()
    assert table(at, "question", "student")["example_id"].to_list() == ["x4", "x2"]
    at.radio(key="answers_view").set_value("base_right").run()
    miss = table(at, "question", "student").row(0, named=True)
    assert (miss["example_id"], miss["student"], miss["base"], miss["base_contains"]) == (
        "x4",
        "gravity only",
        "a net force does",
        1.0,
    )
    at.radio(key="answers_view").set_value("misses").run()
    at.selectbox(key="answers_topic").set_value("optics").run()
    assert table(at, "question", "student")["example_id"].to_list() == ["x2"]
    (chart,) = charts(at)
    expected = queries.topic_scores(Partition(demo, "physics"), "ck1", "token_f1")
    assert chart.select(expected.columns).sort("topic", "model_role").equals(expected.sort("topic", "model_role"))
    assert chart.filter((pl.col("topic") == "optics") & (pl.col("model_role") == "base"))[
        "ci_high"
    ].item() == pytest.approx(0.25)


def test_suites_page_shows_each_items_choices_and_each_models_pick(demo, monkeypatch):
    at = open_app(demo, monkeypatch, page="suites")
    no_traceback(at)
    item = table(at, "item_id", "choices", "student").row(0, named=True)
    assert list(item["choices"]) == CHOICES
    assert (item["student"], item["read"], item["base"], item["student_right"]) == (
        "refraction",
        "reflection",
        "diffraction",
        1.0,
    )
    assert {tuple(c["suite"].unique().sort()) for c in charts(at)} == {("__all__", "optics_mc")}


def test_releases_page_charts_rounds_and_shows_the_gate_the_card_and_the_rows_trained_on(demo, monkeypatch):
    at = open_app(demo, monkeypatch, page="releases")
    no_traceback(at)
    test_split = next(c for c in charts(at) if c["mean"].max() < 0.9)
    assert test_split.filter(pl.col("model_role") == "student").sort("round")["mean"].to_list() == pytest.approx(
        [0.6, 0.7]
    )
    assert len(charts(at)) == 2  # the test split's metric and the suites' accuracy
    said = shown(at)
    assert "beats its base by 0.30 (intervals)" in said and CARD in said
    assert table(at, "rank", "domain", "score")["checkpoint_id"].to_list() == ["ck1", "ck0"]
    rows = table(at, "example_id", "question", "answer")
    assert rows["example_id"].to_list() == ["e0-q1", "e0-q4"]  # round 0's SFT set (time travel), not round 1's
    at.radio(key="release_split").set_value("test").run()
    assert table(at, "example_id", "question", "answer")["example_id"].to_list() == ["e0-q6"]


def test_a_round_chosen_in_the_sidebar_shows_every_table_as_it_was(demo, monkeypatch):
    at = open_app(demo, monkeypatch, page="answers")
    at.selectbox(key="round").set_value(2).run()  # the second round listed, newest first: round 0
    no_traceback(at)
    assert "Checkpoint `ck0` · round 0" in shown(at) and "as of" in shown(at)
    assert table(at, "question", "student")["example_id"].to_list() == ["x3", "x1", "x2"]


def test_a_missing_table_or_an_empty_partition_is_a_message_not_a_traceback(demo, tmp_path, monkeypatch):
    at = open_app(tmp_path / "nothing", monkeypatch, domain=None)
    no_traceback(at)
    assert "No domain has been run" in shown(at)

    only_documents = DeltaRoot(str(tmp_path / "documents_only"))
    put(only_documents, t.RAW_DOCUMENTS, schemas.RAW_DOCUMENTS, [{"domain": "physics", "doc_id": "d1", "text": "x"}])
    for root, domain, message in (
        (only_documents, "physics", "No {table} table under"),
        (demo, "chemistry", "{table} has no rows for domain chemistry"),
    ):
        for page, (_, tables) in links.PAGES.items():
            if page == "documents" and domain == "chemistry":  # chemistry has documents, and nothing quarantined
                assert "Nothing of chemistry's raw folder was quarantined" in shown(
                    open_app(root, monkeypatch, domain, page)
                )
                continue
            at = open_app(root, monkeypatch, domain, page)
            no_traceback(at)
            said = shown(at)
            assert any(message.format(table=name) in said for name in tables), (page, said)


def files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_the_app_writes_nothing(demo, monkeypatch):
    root = Path(demo.root_uri)
    before = files(root)
    at = open_app(demo, monkeypatch)
    for round_choice in (0, 2):
        at.selectbox(key="round").set_value(round_choice).run()
        for page in links.PAGES:
            at.switch_page(f"views/{page}.py").run()
            no_traceback(at)
    assert files(root) == before


def test_without_its_settings_the_app_says_how_to_start_it(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", [str(APP)])
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    no_traceback(at)
    assert "Start the app with `nexa-ui`" in shown(at)


# --- the command, the links, the layers ------------------------------------------------------------------------


def test_nexa_ui_serves_the_app_on_its_port_and_stops_on_sigterm(demo):
    from release_helpers import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NEXA_DELTA_ROOT"}
    proc = subprocess.Popen(
        [str(PROJECT / ".venv" / "bin" / "nexa-ui"), "--port", str(port), "--delta-root", demo.root_uri],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as answer:
                    assert answer.read() == b"ok"
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
                time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/answers?domain=physics", timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        out = proc.stdout.read()
        assert f"nexa-ui: http://127.0.0.1:{port} on {demo.root_uri}" in out and "Stopping" in out
    finally:
        if proc.poll() is None:
            stop_by_pid(proc)


def test_asset_descriptions_link_to_the_app_where_it_runs():
    import dataclasses

    import dagster as dg

    from nexa_assets.definitions import ENVIRONMENT, build_defs

    linked = build_defs(dataclasses.replace(ENVIRONMENT, ui_url="http://ui.example:8501")).resolve_asset_graph()
    for asset, page in ((t.EVAL_METRICS, "answers"), (t.RAW_QUARANTINE, "documents"), (t.LEADERBOARD, "releases")):
        node = linked.get(dg.AssetKey(asset))
        assert node.description.endswith(f"[See its rows in nexa-ui](http://ui.example:8501/{page})")
        assert node.metadata["nexa_ui"].url == f"http://ui.example:8501/{page}"
    plain = build_defs(dataclasses.replace(ENVIRONMENT, ui_url=None)).resolve_asset_graph()
    assert "nexa-ui" not in plain.get(dg.AssetKey(t.EVAL_METRICS)).description
    assert links.page_url("http://ui:1/", t.SFT_DATASET, "bio&med") == "http://ui:1/sft?domain=bio%26med"
    assert (
        links.asset_url("http://d:3000/", t.SFT_DATASET, "bio&med")
        == "http://d:3000/assets/sft_dataset?partition=bio%26med"
    )


def test_the_app_imports_neither_dagster_nor_the_code_location():
    _, named = import_graph(PROJECT, "nexa_ui")
    app_modules = {
        m: names for m, names in named.items() if m != "nexa_ui.cli"
    }  # the command reads the graph's settings
    assert "nexa_ui.queries" in app_modules and "nexa_ui.views.answers" in app_modules
    heavy = {
        m: sorted(
            n for n in names if n.split(".")[0] in {"dagster", "nexa_assets", "resources"} or n.startswith("dagster_")
        )
        for m, names in app_modules.items()
    }
    assert not {m: n for m, n in heavy.items() if n}
