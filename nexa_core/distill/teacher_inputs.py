"""teacher_inputs: chunk documents into passages and render one teacher request per passage."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import polars as pl

from nexa_core import schemas
from nexa_core.distill.prompts import PromptTemplate
from nexa_core.ids import content_id


@dataclass(frozen=True)
class PromptConfig:
    max_pairs_per_passage: int = 16  # several forms of each fact (nexa_core/teacher/question_forms.py)
    max_passage_chars: int = 1200
    min_passage_chars: int = 200  # a shorter passage is merged with the next one where it fits


_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chunk_text(text: str, max_chars: int, min_chars: int) -> list[str]:
    """Split on paragraphs; merge short neighbours up to max_chars; split an over-long paragraph on
    sentence ends. Passages never cut a sentence, so a teacher never sees half a fact."""
    pieces: list[str] = []
    for para in (p.strip() for p in _PARAGRAPHS.split(text)):
        if not para:
            continue
        para = " ".join(para.split())
        if len(para) <= max_chars:
            pieces.append(para)
            continue
        current = ""
        for sentence in _SENTENCE_END.split(para):
            if current and len(current) + 1 + len(sentence) > max_chars:
                pieces.append(current)
                current = sentence
            else:
                current = f"{current} {sentence}".strip()
        if current:
            pieces.append(current)
    passages: list[str] = []
    for piece in pieces:
        if passages and len(passages[-1]) < min_chars and len(passages[-1]) + 1 + len(piece) <= max_chars:
            passages[-1] = f"{passages[-1]} {piece}"
        else:
            passages.append(piece)
    return passages


def render_request(template: PromptTemplate, **fields) -> dict:
    """The request columns of one rendered prompt: its id, the template's name and hash, the messages."""
    messages = template.render(**fields)
    return {
        "request_id": template.request_id(messages),
        "template_name": template.name,
        "template_hash": template.sha256,
        "messages": json.dumps(messages, ensure_ascii=False),
    }


def build_teacher_inputs(
    documents: pl.DataFrame, template: PromptTemplate, cfg: PromptConfig = PromptConfig()
) -> pl.DataFrame:
    """One request per passage of every document. The passage and the pair budget are columns as well
    as words of the prompt: a rule-based teacher reads the columns, never the template's wording."""
    rows = []
    for doc in documents.iter_rows(named=True):
        for index, passage in enumerate(
            chunk_text(doc["text"], max_chars=cfg.max_passage_chars, min_chars=cfg.min_passage_chars)
        ):
            request = render_request(
                template, domain=doc["domain"], topic=doc["topic"], passage=passage, max_pairs=cfg.max_pairs_per_passage
            )
            rows.append(
                {
                    "domain": doc["domain"],
                    "doc_id": doc["doc_id"],
                    "passage_id": content_id(doc["doc_id"], index, passage),
                    "topic": doc["topic"],
                    "source_path": doc["source_path"],
                    "passage": passage,
                    **request,
                    "feedback_round": None,
                    "max_pairs": cfg.max_pairs_per_passage,
                    "known_questions": None,
                }
            )
    if not rows:
        return schemas.empty(schemas.TEACHER_INPUTS)
    return pl.DataFrame(rows, schema=schemas.TEACHER_INPUTS)


def mix_in_feedback(
    requests: pl.DataFrame, feedback_set: pl.DataFrame, feedback_set_version: int | None
) -> tuple[pl.DataFrame, dict]:
    """The corpus requests plus those of the domain's latest feedback set that are not already among
    them, and which round this makes: 0 without feedback, else one past the feedback set's round, with
    the version that fed it."""
    feedback = schemas.conform(feedback_set, schemas.TEACHER_INPUTS)
    fed_by = (
        {"feedback_set_version": feedback_set_version, "feedback_round": int(feedback["feedback_round"].max())}
        if feedback.height
        else {}
    )
    mixed = pl.concat([requests, feedback.join(requests.select("request_id"), on="request_id", how="anti")])
    return mixed, {"round": fed_by.get("feedback_round", -1) + 1, "feedback_requests": feedback.height, **fed_by}
