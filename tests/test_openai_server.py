"""The fault-injecting OpenAI-compatible test server, driven by the real openai client."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import openai
import pytest
from conftest import PROJECT

PASSAGE = (
    "Photosynthesis is the process by which plants convert light into chemical energy. "
    "Water boils at 100 degrees Celsius at sea level."
)


def messages(i: int = 0) -> list[dict]:
    return [
        {"role": "system", "content": "You write study questions."},
        {"role": "user", "content": f'Passage {i}. Write pairs as JSON.\n"""\n{PASSAGE}\n"""'},
    ]


def client(base: str, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="test", **{"max_retries": 0, "timeout": 5, **kwargs})


def stats(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/stats", timeout=5) as response:
        return json.load(response)


def test_answers_pairs_from_the_passage_and_counts_duplicates(teacher_server):
    base = teacher_server()
    api = client(base)
    first = api.chat.completions.create(model="m", messages=messages(), max_tokens=100)
    content = first.choices[0].message.content
    pairs = json.loads(content.removeprefix("```json\n").removesuffix("\n```"))["pairs"]
    assert pairs and all(p["answer"] for p in pairs) and first.choices[0].finish_reason == "stop"
    assert first.usage.prompt_tokens == len(messages()[1]["content"].split())
    assert first.usage.completion_tokens == len(content.split())
    # max_tokens is not part of the key: the same prompt again is a duplicate (paid twice).
    api.chat.completions.create(model="m", messages=messages(), max_tokens=500)
    api.chat.completions.create(model="m", messages=messages(1))
    s = stats(base)
    assert (s["attempts"], s["billed"], s["paid"], s["duplicates"], s["calls"]) == (3, 3, 3, 1, 3)
    assert sorted(s["paid_by_key"].values()) == [1, 2]


def test_429_carries_retry_after_and_the_retry_succeeds(teacher_server):
    base = teacher_server("--fault", "429=1", "--retry-after", "0.2")
    with pytest.raises(openai.RateLimitError) as caught:
        client(base).chat.completions.create(model="m", messages=messages())
    headers = caught.value.response.headers
    assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "200"
    assert caught.value.code == "rate_limit_exceeded"
    assert client(base).chat.completions.create(model="m", messages=messages()).choices[0].message.content
    # The client's own retry honours retry-after-ms: the gap is at least 0.2 s.
    assert client(base, max_retries=2).chat.completions.create(model="m", messages=messages(1))
    s = stats(base)
    assert (s["attempts"], s["billed"], s["paid"], s["faults"]) == (4, 2, 2, {"429": 2})
    assert len(s["retry_gaps"]) == 2 and s["retry_gaps"][1] >= 0.2


def test_content_faults_are_billed_but_not_paid(teacher_server):
    base = teacher_server(
        "--fault", "truncated=0.25", "--fault", "empty=0.33", "--fault", "bad_json=0.5", "--fault", "content_filter=1"
    )
    api, seen = client(base), {}
    for i in range(16):
        choice = api.chat.completions.create(model="m", messages=messages(i)).choices[0]
        seen.setdefault(choice.finish_reason, set()).add(choice.message.content)
        if choice.finish_reason == "length":  # truncated: the first half of what a retry (attempt 1) gets
            retry = api.chat.completions.create(model="m", messages=messages(i)).choices[0]
            assert retry.finish_reason == "stop" and retry.message.content.startswith(choice.message.content)
    assert seen["content_filter"] == {None} and seen["stop"] == {"", "Sorry, here is some prose instead of JSON."}
    s = stats(base)
    cut = s["faults"]["truncated"]
    assert cut and sum(s["faults"].values()) == 16
    assert (s["billed"], s["paid"], s["duplicates"]) == (16 + cut, cut, 0)


def test_drop_and_malformed_raise_and_are_not_billed(teacher_server):
    base = teacher_server("--fault", "drop=0.5", "--fault", "malformed=1")
    api, errors = client(base), set()
    for i in range(8):
        with pytest.raises((openai.APIConnectionError, json.JSONDecodeError)) as caught:
            api.chat.completions.create(model="m", messages=messages(i))
        errors.add(caught.type)
    assert errors == {openai.APIConnectionError, json.JSONDecodeError}  # the client does not wrap bad JSON
    s = stats(base)
    assert (s["attempts"], s["billed"], sum(s["faults"].values())) == (8, 0, 8)
    assert api.chat.completions.create(model="m", messages=messages(0))  # the retry is clean


def test_a_hang_ends_when_the_client_gives_up_and_sigterm_is_prompt():
    # SIGTERM handed down as ignored must still stop the server, even with a request hanging.
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT / "tests" / "openai_server.py"), "--port", "0", "--fault", "timeout=1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    try:
        base = f"http://127.0.0.1:{int(proc.stdout.readline().split()[1])}"
        with pytest.raises(openai.APITimeoutError):
            client(base, timeout=0.2).chat.completions.create(model="m", messages=messages())
        time.sleep(0.05)
        s = stats(base)
        assert (s["in_flight"], s["billed"], s["faults"]) == (0, 0, {"timeout": 1})
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as slow:
            body = json.dumps({"model": "m", "messages": []}).encode()
            slow.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            while stats(base)["in_flight"] == 0:  # wait until that request hangs (for 30 s)
                time.sleep(0.01)
            started = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=3) == 0 and time.monotonic() - started < 1
    finally:
        proc.kill()
        proc.wait()


def test_a_client_that_disconnects_is_still_billed_and_stored(teacher_server):
    base = teacher_server("--latency", "0.2")
    with pytest.raises(openai.APITimeoutError):
        client(base, timeout=0.1).chat.completions.create(
            model="m", messages=messages(), store=True, metadata={"run": "gone"}
        )
    time.sleep(0.2)
    s = stats(base)
    assert (s["billed"], s["paid"], s["stored"], s["in_flight"]) == (1, 1, 1, 0)
    assert [c.metadata for c in client(base).chat.completions.list(metadata={"run": "gone"})] == [{"run": "gone"}]


def test_stored_completions_list_by_metadata_and_page(teacher_server):
    base = teacher_server("--fixed-content")
    api = client(base)
    made = [
        api.chat.completions.create(model=model, messages=messages(i), store=True, metadata={"run": run, "i": str(i)})
        for i, (model, run) in enumerate([("a", "x"), ("a", "x"), ("b", "x"), ("a", "y")])
    ]
    api.chat.completions.create(model="a", messages=messages(9))  # not stored
    assert stats(base)["stored"] == 4
    found = api.chat.completions.list(metadata={"run": "x"}, limit=1)  # one per page: the cursor is used
    assert [c.id for c in found] == [c.id for c in made[:3]] and found.has_more
    assert [c.id for c in api.chat.completions.list(metadata={"run": "x"}, model="a", order="desc")] == [
        made[1].id,
        made[0].id,
    ]
    assert [c.id for c in api.chat.completions.list(metadata={"run": "x", "i": "2"})] == [made[2].id]
    one = api.chat.completions.retrieve(made[3].id)
    assert (
        one.metadata == {"run": "y", "i": "3"} and one.choices[0].message.content == made[3].choices[0].message.content
    )


def test_batch_round_trip_with_faulted_lines_in_the_error_file(teacher_server):
    base = teacher_server("--fault", "500=1", "--batch-delay", "0.1")
    api = client(base)
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": messages(i), "max_tokens": 50},
        }
        for i in range(3)
    ]
    upload = api.files.create(file=("in.jsonl", "\n".join(map(json.dumps, lines)).encode()), purpose="batch")
    assert upload.purpose == "batch" and upload.bytes > 0 and api.files.retrieve(upload.id).filename == "in.jsonl"

    def run() -> openai.types.Batch:
        batch = api.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"job": "t"}
        )
        assert batch.status == "validating" and api.batches.retrieve(batch.id).status == "in_progress"
        while (batch := api.batches.retrieve(batch.id)).status != "completed":
            time.sleep(0.05)
        return batch

    failed = run()  # attempt 0 of every line: the injected 500 lands in the error file
    assert failed.output_file_id is None and failed.request_counts.failed == 3
    errors = [json.loads(line) for line in api.files.content(failed.error_file_id).text.splitlines()]
    assert [e["custom_id"] for e in errors] == ["req-0", "req-1", "req-2"]
    assert all(e["response"] is None and e["error"]["code"] == "server_error" for e in errors)

    done = run()  # attempt 1: every line succeeds
    assert done.error_file_id is None and done.request_counts.completed == done.request_counts.total == 3
    outputs = [json.loads(line) for line in api.files.content(done.output_file_id).read().splitlines()]
    assert [o["custom_id"] for o in outputs] == ["req-0", "req-1", "req-2"]
    assert all(
        o["response"]["status_code"] == 200
        and o["error"] is None
        and o["response"]["body"]["choices"][0]["message"]["content"].startswith("```json")
        for o in outputs
    )
    assert [b.id for b in api.batches.list()] == [done.id, failed.id]  # newest first
    s = stats(base)
    assert (s["batches_created"], s["batch_lines"], s["billed"], s["paid"], s["attempts"]) == (2, 6, 3, 3, 0)

    pending = api.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert api.batches.cancel(pending.id).status == "cancelled"
    time.sleep(0.15)
    assert api.batches.retrieve(pending.id).status == "cancelled" and stats(base)["batch_lines"] == 6


def test_faults_are_deterministic_per_seed_and_unknown_kinds_are_refused(teacher_server):
    base = teacher_server("--fault", "503=0.5", "--seed", "7", "--fixed-content")
    api = client(base)

    def pattern() -> list[bool]:
        outcome = []
        for i in range(16):
            try:
                outcome.append(bool(api.chat.completions.create(model="m", messages=messages(i))))
            except openai.InternalServerError:
                outcome.append(False)
        return outcome

    first = pattern()
    assert 0 < first.count(False) < 16 and stats(base)["faults"] == {"503": first.count(False)}
    assert pattern() == [True] * 16  # attempt 1 of every prompt: past --fault-attempts
    urllib.request.urlopen(urllib.request.Request(f"{base}/reset", method="POST"), timeout=5).close()
    assert pattern() == first and stats(base)["attempts"] == 16  # a reset forgets the attempts
    refused = subprocess.run(
        [sys.executable, str(PROJECT / "tests" / "openai_server.py"), "--fault", "boom=1"],
        capture_output=True,
        text=True,
        cwd=PROJECT,
    )
    assert refused.returncode == 2 and "--fault" in refused.stderr
