"""teacher_outputs: collect one response per teacher request, through a cache keyed by the hash of
(model, messages, params), so a re-materialization pays only for what is missing. The missing
requests go to calls.py (concurrent calls) or batch.py (the Batch API)."""

from __future__ import annotations

import json
import time
from typing import Callable

import polars as pl

from nexa_core import schemas
from nexa_core.teacher.batch import collect_batch
from nexa_core.teacher.calls import collect_sync
from nexa_core.teacher.ledger import TeacherLedger
from nexa_core.teacher.policy import CollectionStopped, CollectPolicy, CollectStats
from nexa_core.teacher.pricing import Pricing
from nexa_core.teacher.types import (
    BudgetExceeded,
    PairBrief,
    RequestsFailed,
    TeacherBackend,
    TeacherUnavailable,
    request_hash,
)


def keyed_requests(requests: pl.DataFrame, model: str, params: dict) -> pl.DataFrame:
    return requests.with_columns(
        pl.col("messages")
        .map_elements(lambda m: request_hash(model, json.loads(m), params), return_dtype=pl.String)
        .alias("request_hash")
    )


def collect_responses(
    requests: pl.DataFrame,
    backend: TeacherBackend,
    ledger: TeacherLedger,
    params: dict | None = None,
    pricing: Pricing = Pricing(),
    policy: CollectPolicy = CollectPolicy(),
    validate: Callable[[str], object] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[pl.DataFrame, CollectStats]:
    """One output row per request: cached responses are reused, in-doubt ones recovered, the rest
    sent. New responses reach the ledger in commits while the run goes on, so a killed run resumes
    with only what is missing. Raises CollectionStopped (budget reached, endpoint unusable, requests
    left without a response) after everything that did come back is committed."""
    params = dict(params or {})
    started = time.perf_counter()
    stats = CollectStats(requests=requests.height)
    keyed = keyed_requests(requests, backend.model, params)
    hashes = keyed["request_hash"].unique().to_list()
    known = ledger.cached(hashes)
    missing = keyed.join(known.select("request_hash"), on="request_hash", how="anti").unique(
        "request_hash", keep="first", maintain_order=True
    )
    stats.cache_hits = keyed.height - keyed.join(missing.select("request_hash"), on="request_hash").height
    spent_before = float(known["cost_usd"].sum() or 0.0)
    error: Exception | None = None
    if missing.height:
        run = collect_batch if policy.mode == "batch" else collect_sync
        try:
            briefs = [c for c in PairBrief.COLUMNS if c in missing.columns]  # judge requests have none
            run(
                missing.select("request_hash", "messages", *briefs),
                backend,
                ledger,
                params,
                pricing,
                policy,
                stats,
                validate=validate,
                spent_before=spent_before,
                log=log,
            )
        except (BudgetExceeded, TeacherUnavailable, RequestsFailed) as exc:
            error = exc  # everything that came back is committed; report once the counts are in
        known = ledger.cached(hashes)
    outputs = keyed.join(known, on="request_hash", how="inner", maintain_order="left").with_columns(
        pl.col("request_hash").is_in(missing["request_hash"].implode()).not_().alias("from_cache")
    )
    stats.failed = keyed.height - outputs.height
    stats.seconds = time.perf_counter() - started
    if error is not None:
        raise CollectionStopped(
            f"{error} ({stats.done()}/{stats.requests} requests have a response, "
            f"${stats.cost_usd:.4f} spent in this run; they are committed)",
            stats,
        ) from error
    return schemas.conform(outputs, schemas.TEACHER_OUTPUTS), stats
