"""How a partition is collected (CollectPolicy) and how far it got (CollectStats)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nexa_core.teacher.replies import UNUSABLE, unusable_reason
from nexa_core.teacher.types import Completion


@dataclass(frozen=True)
class CollectPolicy:
    max_concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_attempts: int = 6  # per request, for retryable failures
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # What to do with a billed but unusable response: "retry" (sent again, up to
    # max_unusable_retries) or "quarantine" (kept with its reason; filters reject it).
    # A retry after "length" doubles max_tokens: the same limit would cut the answer again.
    unusable: dict = field(
        default_factory=lambda: {
            "length": "retry",
            "content_filter": "quarantine",
            "empty": "retry",
            "malformed_json": "retry",
        }
    )
    max_unusable_retries: int = 1
    max_tokens_cap: int = 16384
    commit_every: int = 1024  # responses per Delta commit (fewer, larger commits: 256 cost 15% of throughput) ...
    commit_seconds: float = 2.0  # ... or this often, whichever comes first
    budget_usd: float | None = None  # per partition, counting what its cached responses cost
    progress_seconds: float = 10.0
    mode: str = "sync"  # "sync" (concurrent calls) or "batch" (the OpenAI Batch API)
    batch_poll_seconds: float = 30.0
    batch_max_requests: int = 50_000
    batch_max_rounds: int = 3

    def __post_init__(self):
        bad = {k: v for k, v in self.unusable.items() if k not in UNUSABLE or v not in ("retry", "quarantine")}
        if bad:
            raise ValueError(
                f"teacher unusable rules {bad}: reasons are {list(UNUSABLE)}, actions 'retry' or 'quarantine'"
            )
        if self.mode not in ("sync", "batch"):
            raise ValueError(f"teacher mode '{self.mode}': use 'sync' or 'batch'")


@dataclass
class CollectStats:
    requests: int = 0
    cache_hits: int = 0
    new_calls: int = 0  # requests answered by a new (paid) response in this run
    recovered: int = 0  # answered by a response the endpoint stored before a crash: not paid again
    attempts: int = 0  # calls sent, retries included
    retries: dict = field(default_factory=dict)  # reason -> count
    unusable: dict = field(default_factory=dict)  # reason -> billed unusable responses
    quarantined: int = 0
    failed: int = 0  # requests with no response at the end (retries exhausted, budget)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0  # new spend in this run, unusable responses included
    batches_submitted: int = 0
    batches_reused: int = 0
    seconds: float = 0.0

    def count(self, table: str, reason: str) -> None:
        bucket = getattr(self, table)
        bucket[reason] = bucket.get(reason, 0) + 1

    def bill(self, done: Completion, price: float) -> None:
        self.cost_usd += price
        self.prompt_tokens += done.prompt_tokens
        self.completion_tokens += done.completion_tokens

    def settle(
        self, done: Completion, validate, policy: CollectPolicy, retries: int, params: dict
    ) -> tuple[str | None, bool]:
        """(why the response is unusable or None, whether to send it again). A retry after "length"
        doubles max_tokens in `params`: the same limit would cut the answer again."""
        reason = unusable_reason(done, validate)
        if reason is None:
            return None, False
        self.count("unusable", reason)
        if policy.unusable.get(reason) == "retry" and retries < policy.max_unusable_retries:
            if reason == "length" and params.get("max_tokens"):
                params["max_tokens"] = min(policy.max_tokens_cap, params["max_tokens"] * 2)
            return reason, True
        self.quarantined += 1
        return reason, False

    def done(self) -> int:
        return self.cache_hits + self.new_calls + self.recovered


class CollectionStopped(RuntimeError):
    """A partition's collection ended early; what came back is committed. `stats` says how far it got."""

    def __init__(self, message: str, stats: CollectStats):
        super().__init__(message)
        self.stats = stats
