"""Concurrent teacher calls for one partition.

A fixed pool of workers (the concurrency bound) takes requests from a queue. Before a request is
sent it passes the requests- and tokens-per-minute budgets, any pause the endpoint asked for
(Retry-After), and the spend limit. Failures the endpoint does not bill (429, 5xx, timeouts, dropped
connections, malformed bodies) are retried with jittered exponential backoff; billed but unusable
responses are retried or quarantined by rule. Responses are committed to the ledger every
`commit_every` responses or `commit_seconds`, whichever comes first.

No request is paid twice across a crash: each chunk of requests is written to the dispatch ledger
before any of it is sent, tagged with the chunk id; on resume, a dispatched request without a cached
response is looked up among the completions the endpoint stored for that chunk (OpenAI's stored
completions) before it is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from datetime import datetime, timezone
from typing import Callable

import polars as pl

from nexa_core import schemas
from nexa_core.ids import content_id
from nexa_core.teacher.ledger import TeacherLedger
from nexa_core.teacher.policy import CollectPolicy, CollectStats
from nexa_core.teacher.pricing import Pricing
from nexa_core.teacher.replies import unusable_reason
from nexa_core.teacher.types import (
    BudgetExceeded,
    Completion,
    PairBrief,
    RequestRejected,
    RequestsFailed,
    RetryableError,
    TeacherBackend,
    TeacherUnavailable,
)

BYTES_PER_TOKEN = 3  # a deliberately low estimate, so reservations err on the side of the budget


async def close_backend(backend) -> None:
    """Close the backend's connections inside the loop that opened them."""
    if close := getattr(backend, "aclose", None):
        await close()


def estimate_tokens(messages: list[dict], params: dict) -> tuple[int, int]:
    """(prompt, completion) token estimates for rate limits and spend reservations."""
    prompt = sum(len((m.get("content") or "").encode()) for m in messages) // BYTES_PER_TOKEN + 4 * len(messages)
    return prompt, int(params.get("max_tokens") or params.get("max_completion_tokens") or 1024)


def response_row(
    request_hash: str,
    backend: TeacherBackend,
    done: Completion | None,
    *,
    reason: str | None,
    attempts: int,
    prompt_tokens: int,
    completion_tokens: int,
    cost: float,
    via: str,
) -> dict:
    return {
        "request_hash": request_hash,
        "model": backend.model,
        "backend": backend.name,
        "response": done.text if done else "",
        "finish_reason": done.finish_reason if done else "",
        "unusable_reason": reason,
        "attempts": attempts,
        "via": via,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_s": done.latency_s if done else 0.0,
        "cost_usd": cost,
        "created_at": datetime.now(timezone.utc),
    }


class SyncCollector:
    def __init__(
        self,
        backend: TeacherBackend,
        ledger: TeacherLedger,
        params: dict,
        pricing: Pricing,
        policy: CollectPolicy,
        stats: CollectStats,
        validate: Callable[[str], object] | None,
        spent_before: float,
        log: Callable[[str], None],
    ):
        self.backend, self.ledger, self.params, self.pricing = backend, ledger, params, pricing
        self.policy, self.stats, self.validate, self.log = policy, stats, validate, log
        self.spent = spent_before  # the partition's spend: cached responses plus this run's
        self.reserved = 0.0  # estimated cost of the calls in flight
        self.buffer: list[dict] = []
        self.pause_until = 0.0
        self.stop: Exception | None = None  # budget reached or endpoint unusable: send nothing more
        self.failures: dict[str, int] = {}  # last reason of each request that ran out of attempts
        self.limits = []

    # --- gates ------------------------------------------------------------------------------

    def _reserve(self, messages: list[dict], params: dict) -> float | None:
        if self.policy.budget_usd is None:
            return 0.0
        estimate = self.pricing.cost(*estimate_tokens(messages, params))
        if self.spent + self.reserved + estimate > self.policy.budget_usd:
            self.stop = self.stop or BudgetExceeded(
                f"partition {self.ledger.domain}: stopped before the teacher budget "
                f"${self.policy.budget_usd:.2f} could be passed (spent ${self.spent:.4f}, "
                f"${self.reserved:.4f} in flight); raise the budget to go on"
            )
            return None
        self.reserved += estimate
        return estimate

    async def _gate(self, messages: list[dict], params: dict) -> None:
        loop = asyncio.get_running_loop()
        while (wait := self.pause_until - loop.time()) > 0:  # the endpoint asked the whole pool to wait
            await asyncio.sleep(wait)
        for limiter, amount in self.limits:  # amount 0: the request's own token estimate
            await limiter.acquire(min(amount or sum(estimate_tokens(messages, params)), limiter.max_rate))

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # equal jitter: spread out, never near zero

    # --- one request ------------------------------------------------------------------------

    async def _one(self, row: dict) -> dict | None:
        messages, params = json.loads(row["messages"]), dict(self.params)
        attempts = unusable_retries = prompt_tokens = completion_tokens = 0
        cost = 0.0
        while self.stop is None:
            reservation = self._reserve(messages, params)
            if reservation is None:
                return None
            try:
                await self._gate(messages, params)
                attempts += 1
                self.stats.attempts += 1
                done = await self.backend.complete(messages, params, row.get("tag"), PairBrief.of(row))
            except RetryableError as exc:
                self.stats.count("retries", exc.reason)
                if attempts >= self.policy.max_attempts:
                    self.failures[exc.reason] = self.failures.get(exc.reason, 0) + 1
                    return None
                if exc.retry_after is not None:
                    loop = asyncio.get_running_loop()
                    self.pause_until = max(self.pause_until, loop.time() + exc.retry_after)
                else:
                    await asyncio.sleep(self._backoff(attempts))
                continue
            except RequestRejected as exc:
                self.stats.quarantined += 1
                return response_row(
                    row["request_hash"],
                    self.backend,
                    None,
                    reason=f"rejected: {exc.reason}"[:300],
                    attempts=attempts,
                    prompt_tokens=0,
                    completion_tokens=0,
                    cost=cost,
                    via="sync",
                )
            except TeacherUnavailable as exc:
                self.stop = self.stop or exc
                return None
            finally:
                self.reserved -= reservation
            price = self.pricing.cost(done.prompt_tokens, done.completion_tokens)
            cost += price
            prompt_tokens += done.prompt_tokens
            completion_tokens += done.completion_tokens
            self.spent += price
            self.stats.bill(done, price)
            reason, again = self.stats.settle(done, self.validate, self.policy, unusable_retries, params)
            if again:
                unusable_retries += 1
                continue
            self.stats.new_calls += 1
            return response_row(
                row["request_hash"],
                self.backend,
                done,
                reason=reason,
                attempts=attempts,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost=cost,
                via="sync",
            )
        return None

    # --- the pool ---------------------------------------------------------------------------

    async def _flush(self, lock: asyncio.Lock) -> None:
        async with lock:
            rows, self.buffer = self.buffer, []
            if rows:
                await asyncio.to_thread(self.ledger.commit, pl.DataFrame(rows, schema=schemas.TEACHER_CACHE))

    async def _recover(self, rows: list[dict]) -> list[dict]:
        """Answer in-doubt requests from what the endpoint stored; return the requests still to send."""
        if not self.backend.paid or not rows:
            return rows
        dispatched = await asyncio.to_thread(self.ledger.dispatched, [r["request_hash"] for r in rows])
        if dispatched.is_empty():
            return rows
        recover = getattr(self.backend, "recover", None)
        found = await recover(dispatched["chunk_id"].unique().to_list()) if recover else None
        if found is None:
            self.log(
                f"partition {self.ledger.domain}: {dispatched['request_hash'].n_unique()} requests were sent "
                "by an earlier run that stopped before their responses were committed; this endpoint cannot "
                "be asked for them, so they are sent again and may be paid twice"
            )
            return rows
        recovered, wanted = [], {r["request_hash"] for r in rows}
        for request_hash, done in found.items():
            # Only what is still missing; an unusable one goes through the usual rules.
            if request_hash in wanted and unusable_reason(done, self.validate) is None:
                recovered.append(
                    response_row(
                        request_hash,
                        self.backend,
                        done,
                        reason=None,
                        attempts=1,
                        prompt_tokens=done.prompt_tokens,
                        completion_tokens=done.completion_tokens,
                        cost=self.pricing.cost(done.prompt_tokens, done.completion_tokens),
                        via="recovered",
                    )
                )
        if recovered:
            await asyncio.to_thread(self.ledger.commit, pl.DataFrame(recovered, schema=schemas.TEACHER_CACHE))
            self.spent += sum(r["cost_usd"] for r in recovered)
            self.stats.recovered += len(recovered)
            self.log(
                f"partition {self.ledger.domain}: {len(recovered)} responses paid for by an earlier run "
                "were recovered from the endpoint's stored completions, not sent again"
            )
        done_hashes = {r["request_hash"] for r in recovered}
        return [r for r in rows if r["request_hash"] not in done_hashes]

    async def run(self, missing: pl.DataFrame) -> None:
        from aiolimiter import AsyncLimiter

        rows = await self._recover(missing.to_dicts())
        # Budgets flow continuously: a bucket holds one second's worth (endpoints enforce per-minute
        # limits over shorter windows too), or one largest request where that is more.
        if rpm := self.policy.requests_per_minute:
            self.limits.append((AsyncLimiter(rpm / 60, 1), 1))
        if (tpm := self.policy.tokens_per_minute) and rows:
            largest = max(sum(estimate_tokens(json.loads(r["messages"]), self.params)) for r in rows)
            period = min(60.0, max(1.0, 60 * largest / tpm))
            self.limits.append((AsyncLimiter(tpm * period / 60, period), 0))  # 0: the request's own estimate
        lock = asyncio.Lock()
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.policy.commit_every)
        total, started = self.stats.requests, time.perf_counter()

        async def produce() -> None:
            for start in range(0, len(rows), self.policy.commit_every):
                if self.stop is not None:
                    break
                chunk = rows[start : start + self.policy.commit_every]
                if self.backend.paid:  # committed before any of the chunk is sent: the crash-proof record
                    chunk_id = content_id(self.ledger.domain, chunk[0]["request_hash"], time.time_ns())
                    now = datetime.now(timezone.utc)
                    await asyncio.to_thread(
                        self.ledger.record_dispatch,
                        pl.DataFrame(
                            [
                                {
                                    "domain": self.ledger.domain,
                                    "request_hash": r["request_hash"],
                                    "chunk_id": chunk_id,
                                    "dispatched_at": now,
                                }
                                for r in chunk
                            ],
                            schema=schemas.TEACHER_DISPATCH,
                        ),
                    )
                    for r in chunk:
                        r["tag"] = {"nexa_chunk": chunk_id, "nexa_request": r["request_hash"]}
                for r in chunk:
                    await queue.put(r)
            for _ in range(self.policy.max_concurrency):
                await queue.put(None)

        async def work() -> None:
            while (row := await queue.get()) is not None:
                if self.stop is None and (result := await self._one(row)) is not None:
                    self.buffer.append(result)
                    if len(self.buffer) >= self.policy.commit_every:
                        await self._flush(lock)

        finished = asyncio.Event()

        async def tick() -> None:
            last_progress = time.perf_counter()
            while not finished.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), self.policy.commit_seconds)
                await self._flush(lock)
                if time.perf_counter() - last_progress >= self.policy.progress_seconds:
                    last_progress = time.perf_counter()
                    self.log(self.progress(total, started))

        ticker = asyncio.create_task(tick())
        try:
            await asyncio.gather(produce(), *(work() for _ in range(self.policy.max_concurrency)))
        finally:
            # Stopped, never cancelled: a cancelled flush leaves its commit running unawaited (or never
            # started), and the outputs read next would miss those rows.
            finished.set()
            await ticker
            await self._flush(lock)  # whatever happened, what was paid for is kept
            await close_backend(self.backend)
        self.log(self.progress(total, started))
        if self.stop is not None:
            raise self.stop
        if self.failures:
            raise RequestsFailed(
                f"partition {self.ledger.domain}: {sum(self.failures.values())} requests got no response after "
                f"{self.policy.max_attempts} attempts (last errors: {self.failures}); "
                "re-materialize to retry only those"
            )

    def progress(self, total: int, started: float) -> str:
        s = self.stats
        rate = (s.new_calls + s.recovered) / max(time.perf_counter() - started, 1e-9)
        return (
            f"partition {self.ledger.domain}: {s.done()}/{total} responses ({rate:.0f}/s new), "
            f"{s.cache_hits} cached, {s.recovered} recovered, {sum(s.retries.values())} retries, "
            f"{s.quarantined} quarantined, ${s.cost_usd:.4f} spent in this run"
        )


def collect_sync(
    missing: pl.DataFrame,
    backend: TeacherBackend,
    ledger: TeacherLedger,
    params: dict,
    pricing: Pricing,
    policy: CollectPolicy,
    stats: CollectStats,
    *,
    validate=None,
    spent_before: float = 0.0,
    log: Callable[[str], None] = print,
) -> None:
    collector = SyncCollector(backend, ledger, params, pricing, policy, stats, validate, spent_before, log)
    asyncio.run(collector.run(missing))
