"""teacher_outputs: collect one response per teacher request, through a cache keyed by the hash of
(model, messages, params), so a re-materialization pays only for what is missing.

A backend has `name`, `model`, `paid` and `async complete(messages, params, tag) -> Completion`, and
raises the errors below so the collector knows what may be retried. Two exist: `HeuristicTeacher`
here (the embedded offline default) and the OpenAI-compatible client in resources/teacher.py.
Collection itself: teacher_calls.py (concurrent calls) and teacher_batch.py (the Batch API).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import yaml

import polars as pl

from nexa_core import schemas
from nexa_core.ids import content_id
from nexa_core.question_forms import heuristic_pairs


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class TeacherBackend(Protocol):
    name: str
    model: str
    paid: bool  # False for the offline teacher: no dispatch ledger, no prices

    async def complete(self, messages: list[dict], params: dict, tag: dict | None = None) -> Completion: ...


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


def request_hash(model: str, messages: list[dict], params: dict) -> str:
    return content_id(model, messages, params, length=64)


# --- the embedded offline teacher -------------------------------------------------------------

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


# --- parsing ----------------------------------------------------------------------------------

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
        if not isinstance(pair, dict) or not isinstance(pair.get("question"), str) \
                or not isinstance(pair.get("answer"), str):
            raise TeacherResponseError(f"pair {i} lacks string 'question' and 'answer': {str(pair)[:120]!r}")
        out.append({"question": pair["question"].strip(), "answer": pair["answer"].strip(),
                    "kind": str(pair.get("kind") or "fact")})
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


# --- money ------------------------------------------------------------------------------------

PRICES_FILE = Path(__file__).parent / "configs" / "teacher_prices.yaml"


@dataclass(frozen=True)
class Pricing:
    usd_per_1m_input: float = 0.0
    usd_per_1m_output: float = 0.0
    batch_discount: float = 0.5  # the Batch API bills this share of the list price
    known: bool = True  # False: the model is in no price table, so cost is unknown (recorded as 0)

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        usd = (prompt_tokens * self.usd_per_1m_input + completion_tokens * self.usd_per_1m_output) / 1e6
        return usd * self.batch_discount if batch else usd


def price_for(model: str, table: dict | None = None, path: Path = PRICES_FILE) -> Pricing:
    """The model's prices from `table` (model -> {input, output[, batch_discount]}, USD per 1M
    tokens), else from the shipped price file. A dated snapshot (`2024-08-06`) falls back to its
    base name."""
    prices = {**(yaml.safe_load(path.read_text())["models"] if path.is_file() else {}), **(table or {})}
    entry = prices.get(model) or prices.get(re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model))
    if entry is None:
        return Pricing(known=False)
    return Pricing(float(entry["input"]), float(entry["output"]), float(entry.get("batch_discount", 0.5)))


class BudgetExceeded(RuntimeError):
    """The collector stopped sending: the next request could take the partition past its budget."""


class RequestsFailed(RuntimeError):
    """Some requests are still without a response after every allowed attempt."""


class CollectionStopped(RuntimeError):
    """A partition's collection ended early; what came back is committed. `stats` says how far it got."""

    def __init__(self, message: str, stats: "CollectStats"):
        super().__init__(message)
        self.stats = stats


# --- collection -------------------------------------------------------------------------------

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
    unusable: dict = field(default_factory=lambda: {"length": "retry", "content_filter": "quarantine",
                                                    "empty": "retry", "malformed_json": "retry"})
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
            raise ValueError(f"teacher unusable rules {bad}: reasons are {list(UNUSABLE)}, actions 'retry' or 'quarantine'")
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

    def settle(self, done: Completion, validate, policy: "CollectPolicy", retries: int, params: dict
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


class TeacherLedger:
    """The Delta tables behind collection, over a store with scan/append/exists (resources.delta
    DeltaStore): `teacher_cache` (one row per paid response), `teacher_dispatch` (which requests
    were sent, committed before they are sent) and `teacher_batches` (Batch API submissions)."""

    CACHE, DISPATCH, BATCHES = "teacher_cache", "teacher_dispatch", "teacher_batches"

    def __init__(self, store, domain: str):
        self.store, self.domain = store, domain

    def _read(self, table: str, schema: dict, where: pl.Expr) -> pl.DataFrame:
        if not self.store.exists(table):
            return schemas.empty(schema)
        return self.store.scan(table).filter(where).collect()

    def cached(self, hashes: list[str]) -> pl.DataFrame:
        rows = self._read(self.CACHE, schemas.TEACHER_CACHE, pl.col("request_hash").is_in(hashes))
        return schemas.conform(rows, schemas.TEACHER_CACHE).unique("request_hash", keep="first")

    def commit(self, rows: pl.DataFrame) -> None:
        self.store.append(self.CACHE, schemas.conform(rows, schemas.TEACHER_CACHE))

    def dispatched(self, hashes: list[str]) -> pl.DataFrame:
        return self._read(self.DISPATCH, schemas.TEACHER_DISPATCH,
                          (pl.col("domain") == self.domain) & pl.col("request_hash").is_in(hashes))

    def record_dispatch(self, rows: pl.DataFrame) -> None:
        self.store.append(self.DISPATCH, schemas.conform(rows, schemas.TEACHER_DISPATCH))

    def batches(self) -> pl.DataFrame:
        """The latest state of each batch this domain submitted."""
        rows = self._read(self.BATCHES, schemas.TEACHER_BATCHES, pl.col("domain") == self.domain)
        return rows.sort("recorded_at").unique("batch_id", keep="last", maintain_order=True)

    def record_batch(self, rows: pl.DataFrame) -> None:
        self.store.append(self.BATCHES, schemas.conform(rows, schemas.TEACHER_BATCHES))


def keyed_requests(requests: pl.DataFrame, model: str, params: dict) -> pl.DataFrame:
    return requests.with_columns(pl.col("messages").map_elements(
        lambda m: request_hash(model, json.loads(m), params), return_dtype=pl.String).alias("request_hash"))


def collect_responses(requests: pl.DataFrame, backend: TeacherBackend, ledger: TeacherLedger,
                      params: dict | None = None, pricing: Pricing = Pricing(),
                      policy: CollectPolicy = CollectPolicy(), validate: Callable[[str], object] | None = None,
                      log: Callable[[str], None] = print) -> tuple[pl.DataFrame, CollectStats]:
    """One output row per request: cached responses are reused, in-doubt ones recovered, the rest
    sent. New responses reach the ledger in commits while the run goes on, so a killed run resumes
    with only what is missing. Raises CollectionStopped (budget reached, endpoint unusable, requests
    left without a response) after everything that did come back is committed."""
    from nexa_core import teacher_batch, teacher_calls  # they import this module

    params = dict(params or {})
    started = time.perf_counter()
    stats = CollectStats(requests=requests.height)
    keyed = keyed_requests(requests, backend.model, params)
    hashes = keyed["request_hash"].unique().to_list()
    known = ledger.cached(hashes)
    missing = keyed.join(known.select("request_hash"), on="request_hash", how="anti") \
        .unique("request_hash", keep="first", maintain_order=True)
    stats.cache_hits = keyed.height - keyed.join(missing.select("request_hash"), on="request_hash").height
    spent_before = float(known["cost_usd"].sum() or 0.0)
    error: Exception | None = None
    if missing.height:
        run = teacher_batch.collect_batch if policy.mode == "batch" else teacher_calls.collect_sync
        try:
            run(missing.select("request_hash", "messages"), backend, ledger, params, pricing, policy, stats,
                validate=validate, spent_before=spent_before, log=log)
        except (BudgetExceeded, TeacherUnavailable, RequestsFailed) as exc:
            error = exc  # everything that came back is committed; report once the counts are in
        known = ledger.cached(hashes)
    outputs = keyed.join(known, on="request_hash", how="inner", maintain_order="left").with_columns(
        pl.col("request_hash").is_in(missing["request_hash"].implode()).not_().alias("from_cache"))
    stats.failed = keyed.height - outputs.height
    stats.seconds = time.perf_counter() - started
    if error is not None:
        raise CollectionStopped(f"{error} ({stats.done()}/{stats.requests} requests have a response, "
                                f"${stats.cost_usd:.4f} spent in this run; they are committed)", stats) from error
    return schemas.conform(outputs, schemas.TEACHER_OUTPUTS), stats
