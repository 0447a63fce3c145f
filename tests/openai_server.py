"""A fast, fault-injecting, OpenAI-compatible server for tests and benchmarks, on 127.0.0.1.

POST /v1/chat/completions answers with question/answer pairs taken from the passage in the prompt
(by the same rules as the offline teacher), or, to a rubric judge prompt, with a score by word
overlap. It also serves stored completions (`"store": true`; GET /v1/chat/completions[/{id}]),
files (/v1/files) and the Batch API (/v1/batches), all in memory.

Billing follows OpenAI: a completion is billed when generated (after `--latency`), even if the client
has gone; transport faults (429/500/503/timeout/drop/malformed) are never billed. A request's key is
sha256 of its model and messages (not max_tokens etc.), so retries of one prompt share a key; its
attempt number is how often that key was seen before. `--fault KIND=RATE` fires deterministically
from (seed, kind, key, attempt) while attempt < --fault-attempts, so retries eventually succeed.
GET /stats returns the counters (`calls` is the legacy name for `billed`); POST /reset zeroes them.

Run: python tests/openai_server.py --port 0 [flags]   (prints "PORT <n>" when listening)
"""

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PASSAGE = re.compile(r'"""\n(.*?)\n"""', re.S)
PROSE = "Sorry, here is some prose instead of JSON."
FIXED = (
    "```json\n"
    + json.dumps({"pairs": [{"question": "What is tested?", "answer": "The server.", "kind": "definition"}]})
    + "\n```"
)
MALFORMED = b'{"id": "chatcmpl-1", "choices": [{"index": 0, "mess'
TRANSPORT = ("429", "500", "503", "timeout", "drop", "malformed")  # never billed
CONTENT = ("truncated", "empty", "bad_json", "content_filter")  # billed, never paid
IDS = itertools.count(1)  # never reset, so ids stay unique for the life of the process


class State:
    """All counters and stored objects; POST /reset replaces it with a fresh one."""

    def __init__(self, faults: list[tuple[str, float]]):
        self.attempts = self.billed = self.paid = self.duplicates = 0
        self.in_flight = self.max_in_flight = self.batch_lines = self.batches_created = 0
        self.faults = {kind: 0 for kind, _ in faults}
        self.seen: dict[str, int] = {}  # key -> requests received (the next attempt number)
        self.paid_by_key: dict[str, int] = {}
        self.last_429: dict[str, float] = {}  # key -> monotonic time its 429 was sent
        self.retry_gaps: list[float] = []
        self.completions: dict[str, dict] = {}  # stored completions, in creation order
        self.files: dict[str, tuple[dict, bytes]] = {}
        self.batches: dict[str, dict] = {}
        self.tasks: dict[str, asyncio.Task] = {}  # running batches

    def stats(self) -> dict:
        return {
            "calls": self.billed,
            "attempts": self.attempts,
            "billed": self.billed,
            "paid": self.paid,
            "duplicates": self.duplicates,
            "faults": self.faults,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "batch_lines": self.batch_lines,
            "batches_created": self.batches_created,
            "stored": len(self.completions),
            "paid_by_key": self.paid_by_key,
            "retry_gaps": self.retry_gaps,
        }


ARGS: argparse.Namespace
S: State


def error(status: int, message: str, kind: str, headers: dict | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": kind}}, status=status, headers=headers
    )


def user_text(body: dict) -> str:
    content = next((m.get("content") for m in body["messages"] if m.get("role") == "user"), "") or ""
    if isinstance(content, list):  # content parts
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content


def begin(body: dict) -> tuple[str, str | None]:
    """Register one receipt of this request: its key and the fault (if any) to inject."""
    key = hashlib.sha256(
        json.dumps({"model": body["model"], "messages": body["messages"]}, sort_keys=True).encode()
    ).hexdigest()
    attempt = S.seen.get(key, 0)
    S.seen[key] = attempt + 1
    now = time.monotonic()
    if key in S.last_429:
        S.retry_gaps.append(round(now - S.last_429.pop(key), 4))
    fault = None
    if attempt < ARGS.fault_attempts:
        for kind, rate in ARGS.fault:
            u = int(hashlib.sha256(f"{ARGS.seed}:{kind}:{key}:{attempt}".encode()).hexdigest()[:8], 16) / 2**32
            if u < rate:
                fault = kind
                S.faults[kind] += 1
                break
    if fault == "429":
        S.last_429[key] = now
    return key, fault


def judgement(blocks: list[str]) -> dict:
    """A deterministic judge for tests: 1..5 by the share of reference words the answer has."""
    reference, answer = (set(re.findall(r"\w+", b.lower())) for b in blocks[1:3])
    share = len(reference & answer) / len(reference) if reference else 0.0
    return {"score": 1 + round(4 * share), "reason": f"{share:.0%} of the reference's words are in the answer"}


def finish(body: dict, key: str, fault: str | None) -> dict:
    """Generate and bill one completion (a content fault shapes it); store it if asked."""
    user = user_text(body)
    if ARGS.garbage or fault == "bad_json":
        content = PROSE
    elif ARGS.fixed_content or fault in ("empty", "content_filter"):
        content = FIXED  # cheap; the content faults below replace it anyway
    elif "Answer to grade:" in user:  # a rubric judge prompt (nexa_core/rubrics)
        content = json.dumps(judgement(PASSAGE.findall(user)))
    elif '{"restatements":' in user:  # a restatement prompt (nexa_core/prompts/restatements_v*.txt)
        from nexa_core.teacher.restatement_forms import restatements

        found = PASSAGE.search(user)
        content = json.dumps({"restatements": restatements(found.group(1) if found else user, 4)})
    else:
        # From question_forms itself, on first use: the nexa_core.teacher package pulls in polars,
        # which would double the start-up time that every test pays (and --fixed-content never needs it).
        from nexa_core.teacher.question_forms import heuristic_pairs

        found = PASSAGE.search(user)
        content = "```json\n" + json.dumps({"pairs": heuristic_pairs(found.group(1) if found else user)}) + "\n```"
    reason = "stop"
    if fault == "truncated":
        content, reason = content[: len(content) // 2], "length"
    elif fault == "empty":
        content = ""
    elif fault == "content_filter":
        content, reason = None, "content_filter"
    S.billed += 1
    if fault is None and reason == "stop" and content:
        S.paid += 1
        S.paid_by_key[key] = S.paid_by_key.get(key, 0) + 1
        S.duplicates += S.paid_by_key[key] > 1
    words = len(content.split()) if content else 0
    completion = {
        "id": f"chatcmpl-{next(IDS)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "finish_reason": reason,
                "logprobs": None,
                "message": {"role": "assistant", "content": content, "refusal": None},
            }
        ],
        "usage": {
            "prompt_tokens": len(user.split()),
            "completion_tokens": words,
            "total_tokens": len(user.split()) + words,
        },
    }
    if body.get("store"):
        S.completions[completion["id"]] = {**completion, "metadata": body.get("metadata") or {}}
    return completion


async def generate(body: dict, key: str, fault: str | None) -> dict:
    await asyncio.sleep(ARGS.latency)
    return finish(body, key, fault)


async def create_completion(request: web.Request) -> web.StreamResponse:
    S.attempts += 1
    S.in_flight += 1
    S.max_in_flight = max(S.max_in_flight, S.in_flight)
    try:
        try:
            body = await request.json()
            key, fault = begin(body)
        except (ValueError, KeyError, TypeError) as exc:
            return error(400, f"invalid request body: {exc!r}", "invalid_request_error")
        if fault == "429":
            wait = ARGS.retry_after
            return error(
                429,
                "Rate limit reached, retry later.",
                "rate_limit_exceeded",
                {"Retry-After": str(math.ceil(wait)), "retry-after-ms": str(int(wait * 1000))},
            )
        if fault in ("500", "503"):
            return error(int(fault), f"Injected {fault}.", "server_error")
        if fault == "malformed":
            return web.Response(body=MALFORMED, content_type="application/json")
        if fault in ("timeout", "drop"):
            if fault == "timeout":
                await asyncio.sleep(ARGS.hang)  # cancelled if the client gives up first
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # aiohttp sees the closed transport and writes nothing
        # Shielded: a client that disconnects cancels this handler but not the (billed) generation.
        return web.json_response(await asyncio.shield(generate(body, key, fault)))
    finally:
        S.in_flight -= 1


def page(items: list[dict], request: web.Request, default_limit: int) -> web.Response:
    """OpenAI's cursor page: `limit` items after the id in `after`."""
    limit = min(int(request.query.get("limit", default_limit)), 100)
    after = request.query.get("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    data = items[:limit]
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(items) > limit,
        }
    )


async def list_completions(request: web.Request) -> web.Response:
    query = request.query
    wanted = {k[len("metadata[") : -1]: v for k, v in query.items() if k.startswith("metadata[") and k.endswith("]")}
    items = [
        c
        for c in S.completions.values()
        if query.get("model") in (None, c["model"]) and all(c["metadata"].get(k) == v for k, v in wanted.items())
    ]
    if query.get("order", "asc") == "desc":
        items.reverse()
    return page(items, request, 20)


async def get_completion(request: web.Request) -> web.Response:
    found = S.completions.get(request.match_info["id"])
    return web.json_response(found) if found else error(404, "No such completion.", "invalid_request_error")


def add_file(data: bytes, filename: str, purpose: str) -> dict:
    meta = {
        "id": f"file-{secrets.token_hex(12)}",
        "object": "file",
        "bytes": len(data),
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }
    S.files[meta["id"]] = (meta, data)
    return meta


async def upload_file(request: web.Request) -> web.Response:
    form = await request.post()
    upload = form.get("file")
    if upload is None or not hasattr(upload, "file"):
        return error(400, "A multipart 'file' field is required.", "invalid_request_error")
    return web.json_response(add_file(upload.file.read(), upload.filename, str(form.get("purpose", ""))))


async def get_file(request: web.Request) -> web.Response:
    found = S.files.get(request.match_info["id"])
    return web.json_response(found[0]) if found else error(404, "No such file.", "invalid_request_error")


async def file_content(request: web.Request) -> web.Response:
    found = S.files.get(request.match_info["id"])
    return (
        web.Response(body=found[1], content_type="application/octet-stream")
        if found
        else error(404, "No such file.", "invalid_request_error")
    )


def answer_line(line: str) -> tuple[dict, bool]:
    """One batch input line answered like a sync request: (output or error record, succeeded)."""
    request_id = secrets.token_hex(8)
    custom_id = None
    try:
        item = json.loads(line)
        custom_id, body = item.get("custom_id"), item["body"]
        key, fault = begin(body)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        fault, body = f"invalid line: {exc!r}", None
    S.batch_lines += 1
    if body is None or fault in TRANSPORT:
        return {
            "id": f"batch_req_{request_id}",
            "custom_id": custom_id,
            "response": None,
            "error": {"code": "server_error", "message": f"Injected {fault}." if body else fault},
        }, False
    return {
        "id": f"batch_req_{request_id}",
        "custom_id": custom_id,
        "error": None,
        "response": {"status_code": 200, "request_id": request_id, "body": finish(body, key, fault)},
    }, True


async def run_batch(batch: dict, lines: list[str]) -> None:
    await asyncio.sleep(ARGS.batch_delay)
    done, failed = [], []
    for line in lines:
        record, ok = answer_line(line)
        (done if ok else failed).append(json.dumps(record))
    name = batch["id"]
    for records, field, suffix in ((done, "output_file_id", "output"), (failed, "error_file_id", "error")):
        if records:
            batch[field] = add_file(("\n".join(records) + "\n").encode(), f"{name}_{suffix}.jsonl", "batch_output")[
                "id"
            ]
    now = int(time.time())
    batch.update(
        status="completed",
        finalizing_at=now,
        completed_at=now,
        request_counts={"total": len(lines), "completed": len(done), "failed": len(failed)},
    )
    S.tasks.pop(name, None)


async def create_batch(request: web.Request) -> web.Response:
    body = await request.json()
    found = S.files.get(body.get("input_file_id"))
    if found is None:
        return error(404, "No such input file.", "invalid_request_error")
    if body.get("endpoint") != "/v1/chat/completions":
        return error(400, "Only /v1/chat/completions is supported.", "invalid_request_error")
    lines = [line for line in found[1].decode().splitlines() if line.strip()]
    now = int(time.time())
    batch = {
        "id": f"batch_{secrets.token_hex(12)}",
        "object": "batch",
        "endpoint": body["endpoint"],
        "input_file_id": body["input_file_id"],
        "completion_window": body.get("completion_window", "24h"),
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + 86400,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
        "metadata": body.get("metadata"),
        "errors": None,
    }
    answer = dict(batch)  # the create response says "validating"; the stored batch moves on at once
    batch.update(status="in_progress", in_progress_at=now)
    S.batches[batch["id"]] = batch
    S.batches_created += 1
    S.tasks[batch["id"]] = asyncio.create_task(run_batch(batch, lines))
    return web.json_response(answer)


async def get_batch(request: web.Request) -> web.Response:
    found = S.batches.get(request.match_info["id"])
    return web.json_response(found) if found else error(404, "No such batch.", "invalid_request_error")


async def list_batches(request: web.Request) -> web.Response:
    return page(list(reversed(S.batches.values())), request, 20)  # newest first, like OpenAI


async def cancel_batch(request: web.Request) -> web.Response:
    batch = S.batches.get(request.match_info["id"])
    if batch is None:
        return error(404, "No such batch.", "invalid_request_error")
    task = S.tasks.pop(batch["id"], None)
    if task is None:
        return error(409, f"Cannot cancel a batch with status {batch['status']}.", "invalid_request_error")
    task.cancel()
    now = int(time.time())
    batch.update(status="cancelled", cancelling_at=now, cancelled_at=now)
    return web.json_response(batch)


async def stats(_: web.Request) -> web.Response:
    return web.json_response(S.stats())


async def reset(_: web.Request) -> web.Response:
    """Between test phases, when idle: a request in flight would finish into the new counters."""
    global S
    for task in S.tasks.values():
        task.cancel()
    S = State(ARGS.fault)
    return web.json_response(S.stats())


def fault_spec(text: str) -> tuple[str, float]:
    kind, _, rate = text.partition("=")
    if kind not in TRANSPORT + CONTENT or not rate:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE with KIND in {', '.join(TRANSPORT + CONTENT)}")
    return kind, float(rate)


async def serve() -> None:
    app = web.Application()
    app.add_routes(
        [
            web.post("/v1/chat/completions", create_completion),
            web.get("/v1/chat/completions", list_completions),
            web.get("/v1/chat/completions/{id}", get_completion),
            web.post("/v1/files", upload_file),
            web.get("/v1/files/{id}", get_file),
            web.get("/v1/files/{id}/content", file_content),
            web.post("/v1/batches", create_batch),
            web.get("/v1/batches", list_batches),
            web.get("/v1/batches/{id}", get_batch),
            web.post("/v1/batches/{id}/cancel", cancel_batch),
            web.get("/stats", stats),
            web.post("/reset", reset),
        ]
    )
    # handler_cancellation: a client that gives up ends its hang; the backlog absorbs bursts.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", ARGS.port, backlog=4096)
    await site.start()
    stop = asyncio.Event()
    # A parent may hand down SIGTERM as ignored; stopping by PID must still work.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    global ARGS, S
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--garbage", action="store_true", help="answer prose instead of JSON")
    parser.add_argument("--fixed-content", action="store_true", help="a constant answer (no heuristic_pairs)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to generate each completion")
    parser.add_argument("--fault", type=fault_spec, action="append", default=[], metavar="KIND=RATE")
    parser.add_argument("--fault-attempts", type=int, default=1, help="faults fire only on attempts below this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retry-after", type=float, default=0.5, help="seconds a 429 asks the client to wait")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds a timeout fault hangs")
    parser.add_argument("--batch-delay", type=float, default=0.5, help="seconds until a batch completes")
    ARGS = parser.parse_args()
    S = State(ARGS.fault)
    asyncio.run(serve())
    os._exit(0)  # skip interpreter teardown (polars' thread pool alone takes ~0.1 s); nothing is left to flush


if __name__ == "__main__":
    main()
