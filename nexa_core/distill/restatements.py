"""restatements: each corpus passage said again several ways by the teacher (other words, other order, its
facts as questions and as statements, from their other side, as clozes), for the student to read beside
the documents. One fixed text per fact is barely extractable; several forms of it make it so.

A restatement request is a teacher request like any other (a versioned prompt, restatements_v1, rendered
per passage of teacher_inputs): the same collector answers it, through the same response cache, retries
and spend budget, so a re-materialization pays only for what is missing and a changed template is a new
request. The offline heuristic teacher answers it by rule (nexa_core/teacher/restatement_forms.py).
Every restatement keeps its row; a dropped one carries `reject_reason` and `reject_detail`, as the pairs
do (filters.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from nexa_core import schemas
from nexa_core.distill.filters import (
    QUESTION_FRAME,
    REFUSAL,
    SCREEN_REASONS,
    STOP_WORDS,
    explode_replies,
    grounding,
    normalised_text,
    reason_counts,
)
from nexa_core.distill.prompts import PromptTemplate
from nexa_core.distill.teacher_inputs import render_request
from nexa_core.ids import content_id
from nexa_core.teacher import TeacherResponseError, json_reply

REASONS = (*SCREEN_REASONS, "ungrounded", "copies_passage", "exact_duplicate")
# The frame words of question and cloze forms are not the passage's and do not count against grounding.
_FRAME_WORDS = frozenset(STOP_WORDS) | QUESTION_FRAME | {"question", "answer", "called", "causes", "results", "what"}


@dataclass(frozen=True)
class RestatementConfig:
    restatements_per_passage: int = 4  # asked of the teacher for each corpus passage
    # A language model's room for the reply (at least the teacher's own max_tokens): several restatements
    # of a passage run to a few times its length, and a reply cut short is paid for and asked again.
    max_tokens: int = 2400
    min_chars: int = 40
    max_chars: int = 6000  # a passage's facts as questions from each side run to several times its length
    # Share of a restatement's content words found in its passage: paraphrases use other words, so this is
    # lower than the pairs' bound; it catches a text about something else.
    min_grounding: float = 0.4


def restatement_requests(
    teacher_inputs: pl.DataFrame, template: PromptTemplate, cfg: RestatementConfig = RestatementConfig()
) -> pl.DataFrame:
    """One restatement request per corpus passage of teacher_inputs (a feedback round's requests re-ask
    passages already there): the passage columns, the rendered prompt, and the brief that asks for
    `restatements_per_passage` restatements and no pairs."""
    passages = teacher_inputs.filter(pl.col("feedback_round").is_null()).unique(
        "passage_id", keep="first", maintain_order=True
    )
    rows = [
        {
            **{k: p[k] for k in ("domain", "doc_id", "passage_id", "topic", "source_path", "passage")},
            **render_request(
                template,
                domain=p["domain"],
                topic=p["topic"],
                passage=p["passage"],
                restatements=cfg.restatements_per_passage,
            ),
            "feedback_round": None,
            "max_pairs": 0,
            "known_questions": None,
            "restatements": cfg.restatements_per_passage,
        }
        for p in passages.iter_rows(named=True)
    ]
    return (
        pl.DataFrame(rows, schema=schemas.RESTATEMENT_REQUESTS) if rows else schemas.empty(schemas.RESTATEMENT_REQUESTS)
    )


def parse_restatements(response: str) -> list[dict]:
    """Restatements from a teacher response: {"restatements": [{"kind", "text"}, ...]} or a bare list,
    optionally in a ``` fence; a kind left out is "restatement"."""
    value = json_reply(response)
    items = value.get("restatements") if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise TeacherResponseError(f"expected a 'restatements' list, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise TeacherResponseError(f"restatement {i} lacks a string 'text': {str(item)[:120]!r}")
        out.append({"kind": str(item.get("kind") or "restatement"), "text": item["text"].strip()})
    return out


def screen_restatements(
    requests: pl.DataFrame, outputs: pl.DataFrame, cfg: RestatementConfig = RestatementConfig()
) -> pl.DataFrame:
    """One row per restatement of each response (or one rejected row for a response that holds none),
    with the prompt version and the teacher model that made it, kept or carrying the first rule it broke:
    length bounds, refusal, grounding in the passage, a copy of the passage, a repeat of an earlier
    restatement of the same passage."""
    rows = explode_replies(outputs, requests, parse_restatements, ("kind", "text"), "restatement_index")
    if rows.is_empty():
        return schemas.empty(schemas.RESTATEMENTS)
    rows = (
        rows.with_row_index("row")
        .join(
            requests.select("request_id", "passage", "template_name", "template_hash"),
            on="request_id",
            how="left",
            maintain_order="left",
        )
        .join(
            outputs.select(
                "request_id", pl.col("model").alias("teacher_model"), pl.col("backend").alias("teacher_backend")
            ),
            on="request_id",
            how="left",
            maintain_order="left",
        )
    )
    rows = rows.with_columns(grounding=grounding(rows, requests, "text", _FRAME_WORDS))
    text, size = pl.col("text"), pl.col("text").str.len_chars()
    repeated = (pl.int_range(pl.len()).over(["passage_id", normalised_text("text")]) > 0) & text.is_not_null()
    refusal = text.str.extract(f"({REFUSAL})", 1)
    rules = [
        (size < cfg.min_chars, "too_short", pl.format("{} chars", size)),
        (size > cfg.max_chars, "too_long", pl.format("{} chars", size)),
        (refusal.is_not_null(), "refusal", refusal),
        (
            pl.col("grounding") < cfg.min_grounding,
            "ungrounded",
            pl.format("{} of its words in the passage", pl.col("grounding").round(2)),
        ),
        (normalised_text("text") == normalised_text("passage"), "copies_passage", pl.lit("the passage as it is")),
        (repeated, "exact_duplicate", pl.lit("an earlier restatement of the passage says the same")),
    ]
    reason = pl.when(pl.col("reject_reason").is_not_null()).then(pl.col("reject_reason"))
    detail = pl.when(pl.col("reject_reason").is_not_null()).then(pl.col("reject_detail"))
    for cond, why, what in rules:
        reason, detail = reason.when(cond).then(pl.lit(why)), detail.when(cond).then(what)
    rows = rows.with_columns(
        reason.otherwise(None).alias("reject_reason"),
        detail.otherwise(None).alias("reject_detail"),
        pl.Series(
            [
                content_id(request, place, body)
                for request, place, body in rows.select("request_id", "restatement_index", "text").iter_rows()
            ],
            dtype=pl.String,
        ).alias("restatement_id"),
    )
    return schemas.conform(rows, schemas.RESTATEMENTS)


def restatement_counts(restatements: pl.DataFrame) -> dict[str, int]:
    """Restatements kept and dropped per reason (every reason listed, 0 when none)."""
    return reason_counts(restatements, REASONS)


# Restatements that ask: a held-out document's facts as questions are its held-out questions, nearly word for word
# (qa_form is the question forms the offline teacher asks with), so they are read only of documents whose pairs
# the student is trained on
QUESTION_KINDS = ("qa_form", "cloze")


def read_restatements(
    uri: str,
    version: int | None,
    domain: str,
    storage_options: dict | None = None,
    asked_of: set[str] | None = None,
) -> list[str]:
    """The kept restatements of one domain in the `restatements` table at `uri` (Delta `version`; None:
    the latest), in document, passage and reply order: texts for the student to read. Those that ask
    (QUESTION_KINDS) only of the documents in `asked_of` (the SFT train split's; None: of none)."""
    asks = pl.col("kind").is_in(QUESTION_KINDS)
    return (
        pl.scan_delta(uri, version=version, storage_options=storage_options)
        .filter((pl.col("domain") == domain) & pl.col("reject_reason").is_null())
        .filter(~asks | pl.col("doc_id").is_in(sorted(asked_of or ())))
        .sort("doc_id", "passage_id", "restatement_index")
        .select("text")
        .collect()["text"]
        .to_list()
    )
