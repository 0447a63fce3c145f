"""The embedded offline teacher: a rule set that answers teacher prompts with no endpoint."""

from __future__ import annotations

import json
import re
import time

from nexa_core.question_forms import heuristic_pairs
from nexa_core.teacher.types import Completion

_PASSAGE = re.compile(r'"""\n(?P<passage>.*?)\n"""', re.S)
_MAX_PAIRS = re.compile(r"up to (\d+)")
_KNOWN = re.compile(r"ask different ones:\n((?:- .*\n?)*)")  # the feedback prompt's known questions


class HeuristicTeacher:
    """The embedded offline default teacher. NOT a language model: a documented, deterministic rule
    set (nexa_core/question_forms.py) that lets the whole graph run on a machine with no endpoint and
    no network. It reads the passage, the pair budget and (in a feedback prompt) the questions the
    student already has from the prompt. Token counts are whitespace word counts; cost is zero."""

    name = "heuristic"
    paid = False

    def __init__(self, model: str = "nexa-heuristic-v2"):
        self.model = model

    async def complete(self, messages: list[dict], params: dict, tag: dict | None = None) -> Completion:
        start = time.perf_counter()
        user = next(m["content"] for m in messages if m["role"] == "user")
        found = _PASSAGE.search(user)
        passage = found.group("passage") if found else user
        limit = _MAX_PAIRS.search(user)
        known = _KNOWN.search(user)
        text = json.dumps({"pairs": heuristic_pairs(
            passage, int(limit.group(1)) if limit else 4,
            known={line[2:] for line in known.group(1).splitlines() if line.startswith("- ")} if known else None)},
            ensure_ascii=False)
        return Completion(text=text, finish_reason="stop",
                          prompt_tokens=sum(len(m["content"].split()) for m in messages),
                          completion_tokens=len(text.split()), latency_s=time.perf_counter() - start)
