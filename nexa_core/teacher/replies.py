"""Reading a teacher's reply: its JSON value, the question/answer pairs in it, and why a completed
(billed) response cannot be used."""

from __future__ import annotations

import json
import re
from typing import Callable

from nexa_core.teacher.types import Completion, TeacherResponseError

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.S)


def json_reply(text: str | None, error: type[ValueError] = TeacherResponseError):
    """The JSON value of a model's reply, optionally in a ``` fence; `error` saying why otherwise."""
    if text is None or not text.strip():
        raise error("empty response")
    body = _FENCE.sub("", text.strip())
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise error(f"not JSON ({exc.msg} at char {exc.pos}): {body[:120]!r}") from exc


def parse_pairs(response: str) -> list[dict]:
    """Pairs from a teacher response: {"pairs": [...]} or a bare list, optionally in a ``` fence."""
    value = json_reply(response)
    pairs = value.get("pairs") if isinstance(value, dict) else value
    if not isinstance(pairs, list):
        raise TeacherResponseError(f"expected a 'pairs' list, got {type(pairs).__name__}")
    out = []
    for i, pair in enumerate(pairs):
        if (
            not isinstance(pair, dict)
            or not isinstance(pair.get("question"), str)
            or not isinstance(pair.get("answer"), str)
        ):
            raise TeacherResponseError(f"pair {i} lacks string 'question' and 'answer': {str(pair)[:120]!r}")
        out.append(
            {
                "question": pair["question"].strip(),
                "answer": pair["answer"].strip(),
                "kind": str(pair.get("kind") or "fact"),
            }
        )
    return out


# --- what makes a paid response unusable --------------------------------------------------------

UNUSABLE = ("length", "content_filter", "empty", "malformed_json")


def unusable_reason(done: Completion, validate: Callable[[str], object] | None = None) -> str | None:
    """Why a completed (billed) response cannot be used, or None. `validate` raises on a body that
    does not have the asked-for shape (JSON pairs for the QA template)."""
    if done.finish_reason == "length":
        return "length"
    if done.finish_reason == "content_filter":
        return "content_filter"
    if not (done.text or "").strip():
        return "empty"
    if validate is not None:
        try:
            validate(done.text)
        except (TeacherResponseError, ValueError):
            return "malformed_json"
    return None
