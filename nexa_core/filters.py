"""filtered_pairs: parse teacher responses into question/answer pairs and filter them.

Every pair keeps its row; a dropped one carries `reject_reason` (and `reject_detail`), so the
per-reason counts are a group-by and nothing disappears. Order: parse -> PII scrub -> length bounds
-> refusal/boilerplate -> grounding -> exact duplicates -> near duplicates (MinHash LSH).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import polars as pl

from nexa_core import schemas
from nexa_core.dedup import MinHashConfig, near_duplicates
from nexa_core.ids import content_id
from nexa_core.teacher import TeacherResponseError, parse_pairs

REASONS = ("unparseable_response", "too_short", "too_long", "refusal", "ungrounded", "exact_duplicate",
           "near_duplicate")

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
PHONE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?![\w.])")
REFUSAL = re.compile(
    r"\b(?:as an ai|i(?:'m| am) (?:sorry|unable|not able)|i cannot|i can't|cannot (?:help|assist|answer)|"
    r"not (?:mentioned|stated|provided) in the passage|the passage does not|no information)\b", re.I)
_TOKEN = re.compile(r"\w+")
_STOP = frozenset("the a an of and or in on to is are was were be by for with as at from that this which it "
                  "its because".split())


@dataclass(frozen=True)
class FilterConfig:
    min_question_chars: int = 12
    max_question_chars: int = 600
    min_answer_chars: int = 1
    max_answer_chars: int = 800
    min_grounding: float = 0.6  # share of the answer's content words found in the passage
    minhash: MinHashConfig = field(default_factory=MinHashConfig)


def scrub_pii(text: str) -> tuple[str, bool]:
    scrubbed = PHONE.sub("[PHONE]", EMAIL.sub("[EMAIL]", text))
    return scrubbed, scrubbed != text


def grounding(answer: str, passage: str) -> float:
    words = [w for w in _TOKEN.findall(answer.lower()) if w not in _STOP]
    if not words:
        return 1.0
    source = set(_TOKEN.findall(passage.lower()))
    return sum(w in source for w in words) / len(words)


def normalise(text: str) -> str:
    return " ".join(_TOKEN.findall(text.lower()))


def explode_pairs(outputs: pl.DataFrame, inputs: pl.DataFrame) -> pl.DataFrame:
    """One row per parsed pair; a response that does not parse is one rejected row naming it."""
    joined = outputs.join(inputs.select("request_id", "doc_id", "passage_id", "topic", "source_path", "passage"),
                          on="request_id", how="left")
    rows = []
    for row in joined.iter_rows(named=True):
        base = {k: row[k] for k in ("domain", "request_id", "doc_id", "passage_id", "topic", "source_path", "passage")}
        try:
            pairs = parse_pairs(row["response"])
        except TeacherResponseError as exc:
            rows.append({**base, "kind": None, "question": None, "answer": None, "reject_reason": "unparseable_response",
                         "reject_detail": f"partition {row['domain']}, request {row['request_id']} "
                                          f"(from {row['source_path']}): {exc}"})
            continue
        for index, pair in enumerate(pairs):
            rows.append({**base, **pair, "pair_index": index, "reject_reason": None, "reject_detail": None})
    frame = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    return frame


def filter_pairs(outputs: pl.DataFrame, inputs: pl.DataFrame, cfg: FilterConfig = FilterConfig()) -> pl.DataFrame:
    pairs = explode_pairs(outputs, inputs)
    if pairs.is_empty():
        return schemas.empty(schemas.FILTERED_PAIRS)
    records = pairs.to_dicts()
    for r in records:
        r.setdefault("pair_index", None)
        r["pii_scrubbed"] = False
        if r["reject_reason"]:
            r["pair_id"] = content_id(r["request_id"], "unparseable")
            continue
        r["question"], q_pii = scrub_pii(r["question"])
        r["answer"], a_pii = scrub_pii(r["answer"])
        r["pii_scrubbed"] = q_pii or a_pii
        r["pair_id"] = content_id(r["request_id"], r["pair_index"], r["question"], r["answer"])
        q, a = len(r["question"]), len(r["answer"])
        if q < cfg.min_question_chars or a < cfg.min_answer_chars:
            r["reject_reason"], r["reject_detail"] = "too_short", f"question {q} chars, answer {a} chars"
        elif q > cfg.max_question_chars or a > cfg.max_answer_chars:
            r["reject_reason"], r["reject_detail"] = "too_long", f"question {q} chars, answer {a} chars"
        elif REFUSAL.search(r["answer"]) or REFUSAL.search(r["question"]):
            r["reject_reason"], r["reject_detail"] = "refusal", REFUSAL.search(r["answer"] + " " + r["question"]).group(0)
        elif (g := grounding(r["answer"], r["passage"] or "")) < cfg.min_grounding:
            r["reject_reason"], r["reject_detail"] = "ungrounded", f"{g:.2f} of answer words in passage"

    seen: dict[str, str] = {}
    survivors = []
    for r in records:
        if r["reject_reason"]:
            continue
        key = normalise(r["question"]) + "\x1f" + normalise(r["answer"])
        if key in seen:
            r["reject_reason"], r["reject_detail"] = "exact_duplicate", f"same as pair {seen[key]}"
        else:
            seen[key] = r["pair_id"]
            survivors.append(r)
    match = near_duplicates([f"{r['question']} {r['answer']}" for r in survivors], cfg.minhash)
    for r, other in zip(survivors, match):
        if other >= 0:
            r["reject_reason"], r["reject_detail"] = "near_duplicate", f"near pair {survivors[other]['pair_id']}"
    frame = pl.DataFrame(records, infer_schema_length=None)
    return schemas.conform(frame, schemas.FILTERED_PAIRS)


def reason_counts(filtered: pl.DataFrame) -> dict[str, int]:
    counts = {reason: 0 for reason in REASONS}
    for reason, n in filtered.group_by("reject_reason").len().iter_rows():
        counts["kept" if reason is None else reason] = n
    counts.setdefault("kept", 0)
    return counts
