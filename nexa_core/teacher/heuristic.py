"""The embedded offline teacher: a rule set that answers teacher requests with no endpoint."""

from __future__ import annotations

import json
import time

from nexa_core.teacher.question_forms import heuristic_pairs
from nexa_core.teacher.restatement_forms import restatements
from nexa_core.teacher.types import Completion, PairBrief, TeacherUnavailable


class HeuristicTeacher:
    """The embedded offline default teacher. NOT a language model: a documented, deterministic rule
    set (nexa_core/teacher/question_forms.py) that lets the whole graph run on a machine with no endpoint and
    no network. It answers from the request's brief (the passage, the pair budget and, for a feedback
    request, the questions the student already has), not from the prompt's wording; a restatement
    request's brief gets restatements by rule (nexa_core/teacher/restatement_forms.py), in the JSON shape
    the restatement prompt asks of a language model. Token counts are whitespace word counts; cost is zero."""

    name = "heuristic"
    paid = False

    def __init__(self, model: str = "nexa-heuristic-v2"):
        self.model = model

    async def complete(
        self, messages: list[dict], params: dict, tag: dict | None = None, brief: PairBrief | None = None
    ) -> Completion:
        if brief is None:
            raise TeacherUnavailable(
                "the offline heuristic teacher answers teacher inputs only: this request has "
                f"no {', '.join(PairBrief.COLUMNS[:2])} to write pairs from; configure an "
                "OpenAI-compatible endpoint for any other prompt"
            )
        start = time.perf_counter()
        if brief.restatements is not None:
            reply = {"restatements": restatements(brief.passage, brief.restatements)}
        else:
            known = None if brief.known_questions is None else set(brief.known_questions)
            reply = {"pairs": heuristic_pairs(brief.passage, brief.max_pairs, known=known)}
        text = json.dumps(reply, ensure_ascii=False)
        return Completion(
            text=text,
            finish_reason="stop",
            prompt_tokens=sum(len(m["content"].split()) for m in messages),
            completion_tokens=len(text.split()),
            latency_s=time.perf_counter() - start,
        )
