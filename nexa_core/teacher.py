"""teacher_outputs: collect one response per teacher request, through a cache keyed by the hash of
(model, messages, params), so a re-materialization pays only for what is missing.

The backend is anything with `name`, `model` and `async complete(messages, params) -> Completion`.
Two exist: `HeuristicTeacher` here (the embedded offline default) and the OpenAI-compatible client
in resources/teacher.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable, Protocol

import polars as pl

from nexa_core import schemas
from nexa_core.ids import content_id


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

    async def complete(self, messages: list[dict], params: dict) -> Completion: ...


class TeacherResponseError(ValueError):
    """A teacher response that does not hold question/answer pairs."""


def request_hash(model: str, messages: list[dict], params: dict) -> str:
    return content_id(model, messages, params, length=64)


# --- the embedded offline teacher -------------------------------------------------------------

_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
_DEFINITION = re.compile(
    r"^(?P<article>An?\s+|The\s+)?(?P<term>[A-Za-z][\w'()\- ]{1,60}?)\s+(?P<verb>is|are)\s+(?:defined as\s+)?"
    r"(?P<defn>(?:an?|the)\s+.{10,})$")
_UNIT = (r"(?:(?:kilo|mega|giga|milli|micro|nano|pico|femto|centi)?(?:metres?|meters?|grams?|seconds?|joules?|"
         r"newtons?|watts?|volts?|electronvolts?|moles?|litres?|liters?|pascals?|coulombs?|sieverts?|hertz|"
         r"calories?)|kelvin|degrees?(?: Celsius| Fahrenheit)?|percent|per cent|%|molar|atmospheres?|minutes?|"
         r"hours?|days?|years?|dioptres?|parts per million|base pairs|millimetres of mercury)")
_QUANTITY = re.compile(
    r"(?P<q>(?:about |roughly |approximately |nearly |around |exactly )?[-+]?\d[\d,]*(?:\.\d+)?"
    r"(?:\s*(?:x|×)\s*10\^-?\d+)?(?:\s*(?:million|billion|trillion|thousand))?\s*" + _UNIT
    + r"(?:\s+(?:per|squared|cubed)(?:\s+(?:kilogram|mole|kelvin|second|litre|minute|year|day|metre|"
    r"square metres?|kilograms? squared|nucleon)s?)?)*)(?![\w])")
_CAUSE = re.compile(r"^(?P<effect>.{6,}?),?\s+because\s+(?P<cause>.{10,})$")
_LEADS = re.compile(r"^(?P<cause>.{10,}?)\s+(?P<verb>causes|leads to|results in|produces)\s+(?P<effect>.{10,})$")
_PRONOUN_START = re.compile(r"^(?:It|Its|This|These|That|Those|They|Their|Each|Both|Such)\b")
_PASSAGE = re.compile(r'"""\n(?P<passage>.*?)\n"""', re.S)
_MAX_PAIRS = re.compile(r"up to (\d+)")
_STOP = frozenset("the a an of and or in on to is are was were be by for with as at from that this "
                  "which it its into than then there their these those such can may also".split())


def _strip_end(sentence: str) -> str:
    return sentence.rstrip(" .!?;:")


def _definition(sentence: str) -> dict | None:
    m = _DEFINITION.match(_strip_end(sentence))
    if not m or m.group("term").lower().split()[0] in _STOP or len(m.group("term").split()) > 6:
        return None
    term = m.group("term").strip()
    if not term[:2].isupper():  # keep acronyms and symbols as written
        term = term[0].lower() + term[1:]
    article = (m.group("article") or "").strip().lower()
    subject = f"{article} {term}" if article else term
    defn = m.group("defn")
    return {"kind": "definition", "question": f"What {m.group('verb')} {subject}?",
            "answer": f"{defn[0].upper()}{defn[1:]}."}


def _quantity(sentence: str) -> dict | None:
    m = _QUANTITY.search(sentence)
    if not m:
        return None
    quantity = m.group("q").strip()
    cloze = f"{sentence[:m.start('q')]}____{sentence[m.end('q'):]}"
    return {"kind": "quantity", "question": f"Fill in the quantity: {cloze}", "answer": quantity}


def _cause_effect(sentence: str) -> dict | None:
    s = _strip_end(sentence)
    if m := _CAUSE.match(s):
        effect = m.group("effect")
        return {"kind": "cause_effect",
                "question": f"According to the passage, why is it that {effect[0].lower()}{effect[1:]}?",
                "answer": f"Because {m.group('cause')}."}
    if m := _LEADS.match(s):
        effect = m.group("effect")
        return {"kind": "cause_effect",
                "question": f"According to the passage, what does the following lead to: {m.group('cause')}?",
                "answer": f"{effect[0].upper()}{effect[1:]}."}
    return None


def _cloze(sentence: str) -> dict | None:
    if _PRONOUN_START.match(sentence):  # "It contains ..." means nothing without the sentence before
        return None
    words = re.findall(r"[A-Za-z][A-Za-z\-]{5,}", sentence)
    candidates = [w for w in words[1:] if w.lower() not in _STOP]
    if len(sentence) < 40 or not candidates:
        return None
    key = max(candidates, key=lambda w: (len(w), w))  # longest word: usually the technical term
    return {"kind": "cloze", "question": f"Fill in the blank: {sentence.replace(key, '____', 1)}",
            "answer": key}


def heuristic_pairs(passage: str, max_pairs: int = 4) -> list[dict]:
    """Deterministic question/answer pairs extracted from the passage: definitions first, then
    quantities, causes and effects, then cloze items. Every answer is a span of the passage (or a
    light rewording of one), so the supervision is grounded and learnable."""
    sentences = [s.strip() for s in _SENTENCES.split(" ".join(passage.split())) if len(s.strip()) > 20]
    by_kind: dict[str, list[dict]] = {"definition": [], "quantity": [], "cause_effect": [], "cloze": []}
    used: set[int] = set()
    for extractor in (_definition, _quantity, _cause_effect, _cloze):
        for index, sentence in enumerate(sentences):
            if index in used:
                continue
            pair = extractor(sentence)
            if pair:
                by_kind[pair["kind"]].append(pair)
                used.add(index)
    # Round-robin over kinds so a passage yields a mix, not four clozes.
    pairs: list[dict] = []
    while len(pairs) < max_pairs and any(by_kind.values()):
        for kind in by_kind:
            if by_kind[kind] and len(pairs) < max_pairs:
                pairs.append(by_kind[kind].pop(0))
    return pairs


class HeuristicTeacher:
    """The embedded offline default teacher. NOT a language model: a documented, deterministic rule
    set (see `heuristic_pairs`) that lets the whole graph run on a machine with no endpoint and no
    network. Token counts are whitespace word counts; cost is zero."""

    name = "heuristic"

    def __init__(self, model: str = "nexa-heuristic-v1"):
        self.model = model

    async def complete(self, messages: list[dict], params: dict) -> Completion:
        start = time.perf_counter()
        user = next(m["content"] for m in messages if m["role"] == "user")
        found = _PASSAGE.search(user)
        passage = found.group("passage") if found else user
        limit = _MAX_PAIRS.search(user)
        text = json.dumps({"pairs": heuristic_pairs(passage, int(limit.group(1)) if limit else 4)},
                          ensure_ascii=False)
        return Completion(text=text, finish_reason="stop",
                          prompt_tokens=sum(len(m["content"].split()) for m in messages),
                          completion_tokens=len(text.split()), latency_s=time.perf_counter() - start)


# --- parsing ----------------------------------------------------------------------------------

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.S)


def parse_pairs(response: str) -> list[dict]:
    """Pairs from a teacher response: {"pairs": [...]} or a bare list, optionally in a ``` fence."""
    if response is None or not response.strip():
        raise TeacherResponseError("empty response")
    body = _FENCE.sub("", response.strip())
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise TeacherResponseError(f"not JSON ({exc.msg} at char {exc.pos}): {body[:120]!r}") from exc
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


# --- collection -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pricing:
    usd_per_1m_input: float = 0.0
    usd_per_1m_output: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.usd_per_1m_input + completion_tokens * self.usd_per_1m_output) / 1e6


@dataclass
class CollectStats:
    requests: int = 0
    cache_hits: int = 0
    new_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0


def collect_responses(
    requests: pl.DataFrame,
    backend: TeacherBackend,
    cached: Callable[[list[str]], pl.DataFrame],
    commit: Callable[[pl.DataFrame], None],
    params: dict | None = None,
    pricing: Pricing = Pricing(),
    max_concurrency: int = 16,
    commit_every: int = 256,
    progress: Callable[[CollectStats], None] | None = None,
) -> tuple[pl.DataFrame, CollectStats]:
    """One output row per request. `cached(hashes)` returns cache rows (TEACHER_CACHE schema) for
    the hashes it knows; `commit(rows)` appends new responses to the cache. New responses are
    committed every `commit_every`, so a crash loses at most one batch of paid calls."""
    params = dict(params or {})
    started = time.perf_counter()
    stats = CollectStats(requests=requests.height)
    keyed = requests.with_columns(
        pl.col("messages").map_elements(
            lambda m: request_hash(backend.model, json.loads(m), params), return_dtype=pl.String
        ).alias("request_hash"))
    known = cached(keyed["request_hash"].unique().to_list())
    known = known.unique("request_hash", keep="first") if known.height else schemas.empty(schemas.TEACHER_CACHE)
    missing = keyed.join(known.select("request_hash"), on="request_hash", how="anti") \
        .unique("request_hash", keep="first", maintain_order=True)
    stats.cache_hits = keyed.height - keyed.join(missing.select("request_hash"), on="request_hash").height

    async def run() -> None:
        gate = asyncio.Semaphore(max_concurrency)

        async def one(row: dict) -> dict:
            async with gate:
                done = await backend.complete(json.loads(row["messages"]), params)
            return {"request_hash": row["request_hash"], "model": backend.model, "backend": backend.name,
                    "response": done.text, "finish_reason": done.finish_reason,
                    "prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                    "latency_s": done.latency_s, "cost_usd": pricing.cost(done.prompt_tokens, done.completion_tokens),
                    "created_at": datetime.now(timezone.utc)}

        rows = missing.select("request_hash", "messages").to_dicts()
        for start in range(0, len(rows), commit_every):
            batch = await asyncio.gather(*(one(r) for r in rows[start:start + commit_every]))
            fresh = pl.DataFrame(batch, schema=schemas.TEACHER_CACHE)
            commit(fresh)
            nonlocal known
            known = pl.concat([known, fresh])
            stats.new_calls += len(batch)
            stats.prompt_tokens += int(fresh["prompt_tokens"].sum())
            stats.completion_tokens += int(fresh["completion_tokens"].sum())
            stats.cost_usd += float(fresh["cost_usd"].sum())
            if progress:
                progress(stats)

    if missing.height:
        asyncio.run(run())
    outputs = keyed.join(known, on="request_hash", how="left").with_columns(
        pl.col("request_hash").is_in(missing["request_hash"].implode()).not_().alias("from_cache"))
    stats.seconds = time.perf_counter() - started
    return schemas.conform(outputs, schemas.TEACHER_OUTPUTS), stats
