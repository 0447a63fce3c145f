"""The Batch API path of teacher_outputs: requests are written to a batch file, submitted, polled,
and their results merged into the same response cache as the concurrent path.

Every submission is recorded in the `teacher_batches` ledger and carries its `batch_key` (hash of
model, params and request hashes) as batch metadata. A re-materialized partition polls the batches
it already submitted instead of submitting them again; a batch whose submission was never recorded
(a crash between the two) is found again by its key. Lines that failed, and billed but unusable
answers that the rules retry, go into the next round's batch.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Callable

import polars as pl

from nexa_core import schemas
from nexa_core.ids import content_id
from nexa_core.teacher.calls import close_backend, estimate_tokens, response_row
from nexa_core.teacher.ledger import TeacherLedger
from nexa_core.teacher.policy import CollectPolicy, CollectStats
from nexa_core.teacher.pricing import Pricing
from nexa_core.teacher.types import (
    FINISHED,
    BatchResults,
    BudgetExceeded,
    RequestsFailed,
    TeacherBackend,
    TeacherUnavailable,
)


def batch_key(model: str, params_by_request: dict[str, dict]) -> str:
    """Same requests with the same params, same key: how a submission is recognised again."""
    return content_id(model, sorted(params_by_request.items()), length=32)


def batch_line(request_hash: str, model: str, messages: list[dict], params: dict) -> dict:
    return {
        "custom_id": request_hash,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": messages, **params},
    }


class BatchCollector:
    def __init__(
        self,
        backend,
        ledger: TeacherLedger,
        params: dict,
        pricing: Pricing,
        policy: CollectPolicy,
        stats: CollectStats,
        validate,
        spent_before: float,
        log: Callable[[str], None],
    ):
        self.backend, self.ledger, self.pricing, self.policy = backend, ledger, pricing, policy
        self.stats, self.validate, self.log, self.spent = stats, validate, log, spent_before
        self.base_params = params
        self.params: dict[str, dict] = {}  # per request: a "length" retry doubles its max_tokens
        self.unusable_retries: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.billed: dict[str, tuple[int, int, float]] = {}  # per request, over its attempts: tokens in, out, USD
        self.open: dict[str, tuple[str, set[str]]] = {}  # batch id -> (batch key, request hashes it answers)

    def _record(self, batch_id: str, key: str, hashes: set[str], status: str, merged: bool) -> None:
        self.ledger.record_batch(
            pl.DataFrame(
                [
                    {
                        "domain": self.ledger.domain,
                        "batch_id": batch_id,
                        "batch_key": key,
                        "request_hashes": sorted(hashes),
                        "status": status,
                        "merged": merged,
                        "recorded_at": datetime.now(timezone.utc),
                    }
                ],
                schema=schemas.TEACHER_BATCHES,
            )
        )

    async def _submit(self, hashes: list[str], messages: dict[str, list[dict]]) -> None:
        params = {h: self.params.setdefault(h, dict(self.base_params)) for h in hashes}
        key = batch_key(self.backend.model, params)
        if self.policy.budget_usd is not None:
            estimate = sum(self.pricing.cost(*estimate_tokens(messages[h], params[h]), batch=True) for h in hashes)
            if self.spent + estimate > self.policy.budget_usd:
                raise BudgetExceeded(
                    f"partition {self.ledger.domain}: a batch of {len(hashes)} requests (about ${estimate:.4f}) "
                    f"could pass the teacher budget ${self.policy.budget_usd:.2f} (spent ${self.spent:.4f}); "
                    "not submitted. Raise the budget to go on"
                )
        batch_id = await self.backend.find_batch(key)  # submitted by a run that stopped before recording it
        if batch_id:
            self.stats.batches_reused += 1
        else:
            lines = [batch_line(h, self.backend.model, messages[h], params[h]) for h in hashes]
            batch_id = await self.backend.submit_batch(
                lines, {"nexa_batch_key": key, "nexa_domain": self.ledger.domain}
            )
            self.stats.batches_submitted += 1
        for h in hashes:
            self.attempts[h] = self.attempts.get(h, 0) + 1
        self.stats.attempts += len(hashes)
        await asyncio.to_thread(self._record, batch_id, key, set(hashes), "submitted", False)
        self.open[batch_id] = (key, set(hashes))
        self.log(f"partition {self.ledger.domain}: batch {batch_id} holds {len(hashes)} requests")

    def _merge(self, results: BatchResults, wanted: set[str]) -> set[str]:
        """Commit the usable or quarantined answers of a finished batch; return the hashes answered."""
        rows, answered = [], set()
        for h in sorted(wanted):
            done = results.answers.get(h)
            if done is None:
                self.stats.count("retries", f"batch_{results.errors.get(h, results.status)}"[:80])
                continue
            price = self.pricing.cost(done.prompt_tokens, done.completion_tokens, batch=True)
            before = self.billed.get(h, (0, 0, 0.0))
            self.billed[h] = (before[0] + done.prompt_tokens, before[1] + done.completion_tokens, before[2] + price)
            self.spent += price
            self.stats.bill(done, price)
            reason, again = self.stats.settle(
                done,
                self.validate,
                self.policy,
                self.unusable_retries.get(h, 0),
                self.params.setdefault(h, dict(self.base_params)),
            )
            if again:  # into the next round's batch
                self.unusable_retries[h] = self.unusable_retries.get(h, 0) + 1
                continue
            self.stats.new_calls += 1
            answered.add(h)
            prompt_tokens, completion_tokens, cost = self.billed[h]
            rows.append(
                response_row(
                    h,
                    self.backend,
                    done,
                    reason=reason,
                    attempts=self.attempts.get(h, 1),
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost=cost,
                    via="batch",
                )
            )
        if rows:
            self.ledger.commit(pl.DataFrame(rows, schema=schemas.TEACHER_CACHE))
        return answered

    async def run(self, missing: pl.DataFrame) -> None:
        messages = {r["request_hash"]: json.loads(r["messages"]) for r in missing.iter_rows(named=True)}
        todo = set(messages)
        earlier = await asyncio.to_thread(self.ledger.batches)
        for row in earlier.filter(
            ~pl.col("merged") & ~pl.col("status").is_in(["failed", "expired", "cancelled"])
        ).iter_rows(named=True):
            if hashes := set(row["request_hashes"]) & todo:
                self.open[row["batch_id"]] = (row["batch_key"], hashes)
                self.stats.batches_reused += 1
                self.log(
                    f"partition {self.ledger.domain}: batch {row['batch_id']} was submitted by an earlier run; "
                    "polling it instead of submitting again"
                )
        for _ in range(self.policy.batch_max_rounds):
            waiting = set().union(*(hashes for _, hashes in self.open.values()))
            fresh = sorted(todo - waiting)
            for start in range(0, len(fresh), self.policy.batch_max_requests):
                await self._submit(fresh[start : start + self.policy.batch_max_requests], messages)
            if not self.open:
                break
            while self.open:
                for batch_id in list(self.open):
                    results = await self.backend.batch_results(batch_id)
                    if results.status not in FINISHED:
                        continue
                    key, wanted = self.open.pop(batch_id)
                    todo -= await asyncio.to_thread(self._merge, results, wanted)
                    await asyncio.to_thread(self._record, batch_id, key, wanted, results.status, True)
                if self.open:
                    await asyncio.sleep(self.policy.batch_poll_seconds)
            if not todo:
                break
        if todo:
            raise RequestsFailed(
                f"partition {self.ledger.domain}: {len(todo)} requests have no usable answer after "
                f"{self.policy.batch_max_rounds} batch rounds ({self.stats.retries}); "
                "re-materialize to submit only those"
            )


def collect_batch(
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
    if not hasattr(backend, "submit_batch"):
        raise TeacherUnavailable(f"teacher backend '{backend.name}' has no Batch API; set the teacher's mode to sync")

    async def run() -> None:
        try:
            await BatchCollector(backend, ledger, params, pricing, policy, stats, validate, spent_before, log).run(
                missing
            )
        finally:
            await close_backend(backend)

    asyncio.run(run())
