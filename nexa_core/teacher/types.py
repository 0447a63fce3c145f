"""The teacher contract: what a backend returns and raises, and how a request is keyed.

A backend has `name`, `model`, `paid` and `async complete(messages, params, tag, brief) -> Completion`,
and raises the errors below so the collector knows what may be retried. A language model reads the
rendered `messages`; a rule set reads the `brief`, so a template's wording never changes its answers.
A backend with the Batch API also has `submit_batch`, `find_batch` and `batch_results -> BatchResults`. Two exist:
heuristic.py (the embedded offline default) and openai_client.py (any OpenAI-compatible endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from nexa_core.ids import content_id


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


@dataclass(frozen=True)
class PairBrief:
    """What a teacher request asks for, as data: teacher_inputs' passage, max_pairs and known_questions
    columns (the last only on a feedback request: the questions the student already has). A restatement
    request (nexa_core/distill/restatements.py) asks for no pairs but for `restatements` of the passage."""

    passage: str
    max_pairs: int
    known_questions: tuple[str, ...] | None = None
    restatements: int | None = None

    COLUMNS = ("passage", "max_pairs", "known_questions", "restatements")

    @classmethod
    def of(cls, row: dict) -> PairBrief | None:
        """The brief of a request row; None for a request that asks for no pairs (a judge request)."""
        if row.get("passage") is None or row.get("max_pairs") is None:
            return None
        known = row.get("known_questions")
        return cls(row["passage"], row["max_pairs"], None if known is None else tuple(known), row.get("restatements"))


class TeacherBackend(Protocol):
    name: str
    model: str
    paid: bool  # False for the offline teacher: no dispatch ledger, no prices

    async def complete(
        self, messages: list[dict], params: dict, tag: dict | None = None, brief: PairBrief | None = None
    ) -> Completion: ...


FINISHED = {"completed", "failed", "expired", "cancelled"}  # Batch API states a batch ends in


@dataclass
class BatchResults:
    status: str
    answers: dict[str, Completion] = field(default_factory=dict)  # custom_id (request hash) -> completion
    errors: dict[str, str] = field(default_factory=dict)  # custom_id -> why the line failed


class TeacherResponseError(ValueError):
    """A teacher response that does not hold question/answer pairs."""


class RetryableError(Exception):
    """The call failed in a way a retry may fix (429, 408/409, 5xx, timeout, dropped connection,
    malformed body). The endpoint bills none of these, except a timed-out call it went on to finish:
    that retry can pay twice, so timeout_s should exceed the endpoint's worst latency."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class RequestRejected(Exception):
    """The endpoint refused this one request (400, 422): retrying sends the same bad request."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TeacherUnavailable(RuntimeError):
    """Nothing will succeed (bad credentials, unknown model, endpoint gone): stop the partition."""


class BudgetExceeded(RuntimeError):
    """The collector stopped sending: the next request could take the partition past its budget."""


class RequestsFailed(RuntimeError):
    """Some requests are still without a response after every allowed attempt."""


def request_hash(model: str, messages: list[dict], params: dict) -> str:
    return content_id(model, messages, params, length=64)
