"""Restatements as teacher data: the offline rules, the filters, and the asset through the teacher's
cache against a real OpenAI-compatible server."""

import asyncio
import itertools
import json

import dagster as dg
import polars as pl
from conftest import server_calls
from graph_helpers import materialize_domain, read_table
from teacher_frames import teacher_frames

from nexa_core import schemas
from nexa_core.delta import DeltaRoot
from nexa_core.distill.prompts import PromptTemplate, load_template
from nexa_core.distill.restatements import (
    parse_restatements,
    read_restatements,
    restatement_counts,
    restatement_requests,
    screen_restatements,
)
from nexa_core.teacher import HeuristicTeacher, PairBrief, TeacherLedger, collect_responses
from nexa_core.teacher.restatement_forms import restatements
from resources.teacher import TeacherResource

DEFINITION = "Entropy is a measure of the number of microscopic arrangements of a system."
CAUSE = "Sweating cools the body because evaporating water absorbs latent heat from the skin."
LEADS = "Heating a gas in a sealed rigid container leads to a rise in pressure."
LEANS = "It is read on a gauge fitted to the container."
PASSAGE = " ".join([DEFINITION, CAUSE, LEADS, LEANS])


def test_offline_restatements_are_deterministic_and_say_the_passage_again():
    made = restatements(PASSAGE, 6)
    assert made == restatements(PASSAGE, 6) and restatements(PASSAGE, 2) == made[:2]  # same input, same output
    assert [r["kind"] for r in made] == ["permuted", "qa_form", "inverse", "cloze", "permuted", "permuted"]
    assert len({r["text"] for r in made}) == 6 and PASSAGE not in {r["text"] for r in made}
    # the same sentences in other orders, the one leaning on "it" still after its own
    units = (DEFINITION, CAUSE, f"{LEADS} {LEANS}")
    orders = {" ".join(order) for order in itertools.permutations(units)} - {PASSAGE}
    assert {r["text"] for r in made if r["kind"] == "permuted"} <= orders
    # seeded by the passage, not by the process: these orders on every machine
    assert [r["text"] for r in made if r["kind"] == "permuted"] == [
        " ".join((units[2], units[0], units[1])),
        " ".join((units[2], units[1], units[0])),
        " ".join((units[1], units[0], units[2])),
    ]
    qa, inverse, cloze = (made[i]["text"] for i in (1, 2, 3))
    assert "Question: What is entropy?\nAnswer: A measure of the number of microscopic arrangements" in qa
    assert "Question: What is the term for a measure of the number of microscopic arrangements" in qa
    assert inverse.split(". ") == [
        "A measure of the number of microscopic arrangements of a system is called entropy",
        "Because evaporating water absorbs latent heat from the skin, sweating cools the body",
        "A rise in pressure results from heating a gas in a sealed rigid container.",
    ]
    assert "Entropy is a measure of the number of microscopic ____ of a system. Answer: arrangements." in cloze
    assert [r["kind"] for r in restatements(DEFINITION, 4)] == ["qa_form", "inverse", "cloze"]  # nothing to permute


def test_heuristic_teacher_answers_a_restatement_brief_in_the_prompts_shape():
    messages = load_template("restatements_v1").render(domain="physics", topic="heat", passage=PASSAGE, restatements=3)
    reply = asyncio.run(HeuristicTeacher().complete(messages, {}, brief=PairBrief(PASSAGE, 0, None, 3))).text
    assert parse_restatements(reply) == restatements(PASSAGE, 3)
    assert '{"restatements": [{"kind": "' in messages[1]["content"]  # what a language model is asked for


def test_each_restatement_filter_keeps_its_reason():
    def reply(*texts):
        return json.dumps({"restatements": [{"kind": "paraphrase", "text": t} for t in texts]})

    outputs, inputs = teacher_frames(
        [
            reply(
                f"{CAUSE} {DEFINITION}",
                "Too short.",
                "I'm sorry, I cannot restate this passage about entropy and heat.",
                "Photosynthesis turns sunlight, carbon dioxide and water into sugar in chloroplasts.",
                PASSAGE.upper(),
                f"{CAUSE}  {DEFINITION}",
            ),
            "not json",
        ],
        PASSAGE,
    )
    requests = inputs.with_columns(pl.lit(4).alias("restatements"))
    rows = screen_restatements(requests, outputs)
    assert rows["reject_reason"].to_list() == [
        None,
        "too_short",
        "refusal",
        "ungrounded",
        "copies_passage",
        "exact_duplicate",
        "unparseable_response",
    ]
    assert rows["reject_detail"].drop_nulls().len() == 6 and rows["restatement_id"].n_unique() == rows.height
    counts = restatement_counts(rows)
    assert counts["kept"] == 1 and sum(counts.values()) == rows.height


def test_restatements_are_cached_and_versioned_through_the_teacher(instance, raw_root, delta_root, teacher_server):
    base = teacher_server()
    teacher = TeacherResource(backend="openai", base_url=f"{base}/v1", model="test-teacher", api_key="local")
    assets = dg.AssetSelection.assets("raw_documents", "teacher_inputs", "restatements").without_checks()
    first = materialize_domain(instance, "physics", raw_root, delta_root, teacher=teacher, selection=assets)
    assert first.success
    inputs, _ = read_table(delta_root, "teacher_inputs")
    calls = server_calls(base)
    assert calls == inputs["passage_id"].n_unique()  # one request per corpus passage
    rows, version = read_table(delta_root, "restatements")
    kept = rows.filter(pl.col("reject_reason").is_null())
    assert kept.height >= 2 * calls and set(kept["kind"]) >= {"permuted", "qa_form", "cloze"}
    assert (rows["template_name"] == "restatements_v1").all() and (rows["teacher_model"] == "test-teacher").all()
    assert rows["template_hash"].unique().to_list() == [load_template("restatements_v1").sha256]
    ordered = kept.sort("doc_id", "passage_id", "restatement_index")
    uri = str(delta_root / "nexa" / "restatements")
    assert read_restatements(uri, version, "physics", asked_of=set(kept["doc_id"])) == ordered["text"].to_list()
    # the questions of a document whose pairs are held out are never read: only its statements
    held_out = ordered["doc_id"][0]
    asked = ordered.filter((pl.col("doc_id") != held_out) | ~pl.col("kind").is_in(["qa_form", "cloze"]))
    assert (
        read_restatements(uri, version, "physics", asked_of=set(kept["doc_id"]) - {held_out})
        == (asked["text"].to_list())
        != ordered["text"].to_list()
    )
    # A second materialization is served from the teacher's cache: no new call.
    second = materialize_domain(instance, "physics", raw_root, delta_root, teacher=teacher, selection=assets)
    assert second.success and server_calls(base) == calls
    meta = next(iter(second.asset_materializations_for_node("restatements"))).metadata
    assert (
        meta["new_calls"].value == 0
        and meta["cache_hits"].value == calls
        and meta["template"].value == ("restatements_v1")
    )
    # A changed template is a new request for every passage, and its rows name the new version.
    v1 = load_template("restatements_v1")
    v2 = PromptTemplate("restatements_v2", v1.system, v1.user.replace("different ways", "distinct ways"), "v2-sha")
    requests = restatement_requests(inputs, v2)
    outputs, stats = collect_responses(
        requests, teacher.client(), TeacherLedger(DeltaRoot(str(delta_root)), "physics"), validate=parse_restatements
    )
    assert stats.new_calls == calls and server_calls(base) == 2 * calls
    assert set(screen_restatements(requests, outputs)["template_name"]) == {"restatements_v2"}
    assert schemas.conform(rows, schemas.RESTATEMENTS).columns == list(schemas.RESTATEMENTS)
