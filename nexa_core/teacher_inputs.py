"""teacher_inputs: chunk documents into passages and render one teacher request per passage."""

from __future__ import annotations

import json
import re

import polars as pl

from nexa_core import schemas
from nexa_core.ids import content_id
from nexa_core.prompts import PromptTemplate

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chunk_text(text: str, max_chars: int = 1200, min_chars: int = 200) -> list[str]:
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


def build_teacher_inputs(documents: pl.DataFrame, template: PromptTemplate, max_pairs: int = 4,
                         max_chars: int = 1200) -> pl.DataFrame:
    rows = []
    for doc in documents.iter_rows(named=True):
        for index, passage in enumerate(chunk_text(doc["text"], max_chars=max_chars)):
            passage_id = content_id(doc["doc_id"], index, passage)
            messages = template.render(domain=doc["domain"], topic=doc["topic"], passage=passage,
                                       max_pairs=max_pairs)
            rows.append({
                "domain": doc["domain"],
                "request_id": template.request_id(messages),
                "doc_id": doc["doc_id"],
                "passage_id": passage_id,
                "topic": doc["topic"],
                "source_path": doc["source_path"],
                "passage": passage,
                "template_name": template.name,
                "template_hash": template.sha256,
                "messages": json.dumps(messages, ensure_ascii=False),
                "feedback_round": None,
            })
    if not rows:
        return schemas.empty(schemas.TEACHER_INPUTS)
    return pl.DataFrame(rows, schema=schemas.TEACHER_INPUTS)
