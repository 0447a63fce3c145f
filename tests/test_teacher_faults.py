"""The teacher under faults, against the fault-injecting OpenAI-compatible server (tests/openai_server.py)
on 127.0.0.1. For every fault: the partition completes, every request has exactly one stored response,
and the server's own count of paid calls equals the number of requests."""

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from conftest import PROJECT, SAMPLE_RAW

from nexa_core.data.documents import load_domain
from nexa_core.delta import DeltaRoot
from nexa_core.distill.prompts import load_template
from nexa_core.distill.teacher_inputs import build_teacher_inputs
from nexa_core.teacher import CollectionStopped, TeacherLedger, collect_responses, keyed_requests, parse_pairs
from nexa_core.teacher.batch import batch_key, batch_line
from resources.teacher import TeacherResource

MODEL = "fault-teacher"
PRICES = {MODEL: {"input": 1.0, "output": 2.0}}


def server_stats(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/stats", timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def physics_requests() -> pl.DataFrame:
    documents, _ = load_domain(SAMPLE_RAW, "physics")
    return build_teacher_inputs(documents, load_template("qa_pairs_v1"))


def teacher(base: str, **config) -> TeacherResource:
    settings = {
        "max_concurrency": 16,
        "timeout_s": 30.0,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.5,
        "commit_seconds": 0.2,
        "batch_poll_seconds": 0.1,
        **config,
    }
    return TeacherResource(
        backend="openai", base_url=f"{base}/v1", model=MODEL, api_key="sk-fault-test", prices=PRICES, **settings
    )


def collect(resource: TeacherResource, requests: pl.DataFrame, root: Path, log=None, ledger=None):
    ledger = ledger or TeacherLedger(DeltaRoot(str(root)), "physics")
    outputs, stats = collect_responses(
        requests,
        resource.client(),
        ledger,
        params=resource.params(),
        pricing=resource.pricing(),
        policy=resource.policy(),
        validate=parse_pairs,
        log=log or (lambda message: None),
    )
    return outputs, stats, pl.read_delta(ledger.store.uri("teacher_cache"))


TRANSIENT = ["429", "500", "503", "timeout", "drop", "malformed", "truncated", "empty", "bad_json"]


@pytest.mark.parametrize("kind", TRANSIENT)
def test_each_fault_ends_with_one_paid_response_per_request(kind, teacher_server, tmp_path, physics_requests):
    base = teacher_server("--fault", f"{kind}=0.4", "--latency", "0.01", "--hang", "8", "--retry-after", "0.3")
    # A short client timeout only where the server hangs: elsewhere a slow moment on a busy machine would
    # time out a call the server then completes and bills, which is a real double charge, not this fault.
    # 12 attempts: at a 40% fault rate, 6 leave one of 52 requests unanswered in about one run in five
    outputs, stats, cache = collect(
        teacher(base, timeout_s=3.0 if kind == "timeout" else 30.0, max_attempts=12), physics_requests, tmp_path
    )
    server, n = server_stats(base), physics_requests.height
    assert server["faults"].get(kind, 0) >= 5, server["faults"]  # the fault really happened, many times
    assert outputs.height == n and outputs["unusable_reason"].is_null().all()
    assert cache.height == n and cache["request_hash"].n_unique() == n  # exactly one stored response each
    assert server["paid"] == n and server["duplicates"] == 0
    assert stats.new_calls == n and stats.attempts == server["attempts"]
    if kind == "429":  # every retry waited at least the Retry-After the server asked for
        assert len(server["retry_gaps"]) == server["faults"]["429"] and min(server["retry_gaps"]) >= 0.29
    if kind in ("truncated", "empty", "bad_json"):  # billed but unusable: retried once, and paid for
        reason = {"truncated": "length", "empty": "empty", "bad_json": "malformed_json"}[kind]
        assert stats.unusable == {reason: server["faults"][kind]}
        assert server["billed"] == n + server["faults"][kind]
        assert cache.filter(pl.col("attempts") == 2).height == server["faults"][kind]
        usable_cost = sum(p * 1.0 + c * 2.0 for p, c in zip(outputs["prompt_tokens"], outputs["completion_tokens"]))
        assert stats.cost_usd == pytest.approx(usable_cost / 1e6)  # tokens of every billed attempt


class SlowLedger(TeacherLedger):
    """A ledger whose first commit takes a second, as on a loaded machine or a far object store; it keeps
    when each commit ran."""

    def __init__(self, *args):
        super().__init__(*args)
        self.spans: list[tuple[float, float]] = []

    def commit(self, rows: pl.DataFrame) -> None:
        started = time.perf_counter()
        time.sleep(0 if self.spans else 1.0)
        super().commit(rows)
        self.spans.append((started, time.perf_counter()))


def test_a_commit_in_flight_at_the_last_response_lands_before_the_outputs_are_read(
    teacher_server, tmp_path, physics_requests
):
    # The periodic commit is still running when the last response arrives: the run must wait for it, not
    # cancel it (a cancelled commit that had not started lost its rows; one that had raced the last commit).
    base = teacher_server("--latency", "0.05")
    ledger = SlowLedger(DeltaRoot(str(tmp_path)), "physics")
    outputs, stats, _ = collect(
        teacher(base, max_concurrency=4, commit_seconds=0.1), physics_requests, tmp_path, ledger=ledger
    )
    assert outputs.height == physics_requests.height == stats.new_calls
    assert len(ledger.spans) >= 2
    spans = sorted(ledger.spans)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), "commits overlapped"


def test_content_filtered_answers_are_quarantined_not_retried(teacher_server, tmp_path, physics_requests):
    base = teacher_server("--fault", "content_filter=0.3", "--latency", "0.01")
    outputs, stats, cache = collect(teacher(base), physics_requests, tmp_path)
    server, n = server_stats(base), physics_requests.height
    filtered = server["faults"]["content_filter"]
    assert filtered >= 5 and server["billed"] == n and server["attempts"] == n
    assert outputs.filter(pl.col("unusable_reason") == "content_filter").height == filtered == stats.quarantined
    assert cache.height == n
    # A re-run pays nothing: quarantined answers are cached too.
    _, again, _ = collect(teacher(base), physics_requests, tmp_path)
    assert again.new_calls == 0 and server_stats(base)["attempts"] == n


def test_rejected_request_is_quarantined_and_unusable_endpoint_stops(teacher_server, tmp_path, physics_requests):
    base = teacher_server("--latency", "0.01")
    with pytest.raises(CollectionStopped, match="HTTP 404"):  # unknown path: the base_url is wrong
        collect(
            TeacherResource(backend="openai", base_url=f"{base}/nope", model=MODEL, api_key="k", prices=PRICES),
            physics_requests,
            tmp_path,
        )
    assert server_stats(base)["attempts"] == 0


def test_budget_stops_the_partition_before_it_is_exceeded_and_a_raise_resumes(
    teacher_server, tmp_path, physics_requests
):
    base = teacher_server("--latency", "0.01")
    budget = 0.01  # about a third of the partition at $1/$2 per 1M tokens and 800 max_tokens reserved
    with pytest.raises(CollectionStopped, match="budget") as stopped:
        collect(teacher(base, budget_usd=budget), physics_requests, tmp_path)
    spent = pl.read_delta(str(tmp_path / "nexa" / "teacher_cache"))["cost_usd"].sum()
    assert 0 < spent <= budget and 0 < stopped.value.stats.new_calls < physics_requests.height
    outputs, stats, cache = collect(teacher(base, budget_usd=1.0), physics_requests, tmp_path)
    server = server_stats(base)
    assert outputs.height == physics_requests.height == server["paid"] and server["duplicates"] == 0
    assert stats.cache_hits == cache.height - stats.new_calls


def test_rate_limits_bound_requests_per_minute(teacher_server, tmp_path, physics_requests):
    base = teacher_server("--latency", "0.0")
    requests = physics_requests.head(20)
    started = time.perf_counter()
    collect(teacher(base, requests_per_minute=600), requests, tmp_path)
    # 10 requests/s, with a bucket of one second's worth: 20 requests need at least ~1 s
    assert time.perf_counter() - started >= 0.9


def test_progress_goes_to_the_log(teacher_server, tmp_path, physics_requests):
    base = teacher_server("--latency", "0.05")
    lines: list[str] = []
    collect(teacher(base, max_concurrency=4, progress_seconds=0.2), physics_requests, tmp_path, log=lines.append)
    assert any(f"/{physics_requests.height} responses (" in line and "/s new" in line and "$" in line for line in lines)


def test_batch_api_path_merges_results_and_resubmits_failed_lines(teacher_server, tmp_path, physics_requests):
    base = teacher_server("--fault", "500=0.3", "--fault", "truncated=0.2", "--batch-delay", "0.2")
    outputs, stats, cache = collect(teacher(base, mode="batch"), physics_requests, tmp_path)
    server, n = server_stats(base), physics_requests.height
    assert outputs.height == n and outputs["unusable_reason"].is_null().all() and (outputs["via"] == "batch").all()
    assert cache.height == n and server["paid"] == n and server["duplicates"] == 0
    assert server["batches_created"] == stats.batches_submitted == 2  # round 2: the failed and truncated lines
    assert stats.cost_usd == pytest.approx(
        sum(p + 2 * c for p, c in zip(cache["prompt_tokens"], cache["completion_tokens"])) / 1e6 * 0.5
    )
    _, again, _ = collect(teacher(base, mode="batch"), physics_requests, tmp_path)
    assert again.new_calls == 0 and server_stats(base)["batches_created"] == 2


def test_batch_submitted_but_never_recorded_is_found_again_not_resubmitted(teacher_server, tmp_path, physics_requests):
    """A crash between submitting a batch and recording it: the next run finds it by its key."""
    import asyncio

    base = teacher_server("--batch-delay", "0.2")
    resource = teacher(base, mode="batch")
    requests = keyed_requests(physics_requests, MODEL, resource.params())
    params = {h: resource.params() for h in requests["request_hash"]}
    lines = [
        batch_line(h, MODEL, json.loads(m), resource.params())
        for h, m in zip(requests["request_hash"], requests["messages"])
    ]
    asyncio.run(resource.client().submit_batch(lines, {"nexa_batch_key": batch_key(MODEL, params)}))
    outputs, stats, _ = collect(resource, physics_requests, tmp_path)
    server = server_stats(base)
    assert outputs.height == physics_requests.height and stats.batches_reused == 1 and stats.batches_submitted == 0
    assert server["batches_created"] == 1 and server["paid"] == physics_requests.height


# --- killed runs, through the real CLI ------------------------------------------------------------


def cli_env(dagster_home: Path, delta_root: Path, base: str, **teacher_env) -> dict:
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "NEXA_DELTA_ROOT": str(delta_root),
        "NEXA_TEACHER_BASE_URL": f"{base}/v1",
        "NEXA_TEACHER_MODEL": MODEL,
        "NEXA_TEACHER_API_KEY_ENV": "NEXA_FAULT_KEY",
        "NEXA_FAULT_KEY": "sk-kill-test-4f9a2c",
        **teacher_env,
    }


def materialize_cli(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(Path(os.sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "nexa_assets.definitions",
            "--select",
            "teacher_outputs",
            "--partition",
            "physics",
        ],
        cwd=PROJECT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the run never got to the point to kill it"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture
def physics_inputs(instance, raw_root, delta_root):
    from graph_helpers import materialize_domain

    result = materialize_domain(
        instance, "physics", raw_root, delta_root, selection=["raw_documents", "teacher_inputs"]
    )
    assert result.success
    return pl.read_delta(str(delta_root / "nexa" / "teacher_inputs")).height


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "batch"])
def test_sigkill_mid_partition_then_rematerialize_pays_no_request_twice(
    mode, teacher_server, dagster_home, delta_root, physics_inputs
):
    base = teacher_server("--latency", "0.3", "--batch-delay", "4")
    env = cli_env(
        dagster_home,
        delta_root,
        base,
        NEXA_TEACHER_MODE=mode,
        NEXA_TEACHER_OPTIONS=json.dumps(
            {"max_concurrency": 4, "commit_seconds": 0.5, "batch_poll_seconds": 0.2, "progress_seconds": 0.5}
        ),
    )
    store = DeltaRoot(str(delta_root))
    if mode == "sync":  # killed with responses committed, some paid but not committed, some in flight
        ready = lambda: store.exists("teacher_cache") and server_stats(base)["paid"] >= 20  # noqa: E731
    else:  # killed while the submitted batch is still running (recorded: the table is created empty first)
        ready = lambda: store.exists("teacher_batches") and store.scan("teacher_batches").collect().height > 0  # noqa: E731
    first = materialize_cli(env)
    kill_when(first, ready)
    killed_log = first.stdout.read()
    paid_at_kill = server_stats(base)["paid"]
    assert paid_at_kill < physics_inputs or mode == "batch"
    second = materialize_cli(env)
    resumed_log, _ = second.communicate(timeout=300)
    assert second.returncode == 0, resumed_log[-3000:]
    server = server_stats(base)
    outputs = pl.read_delta(str(delta_root / "nexa" / "teacher_outputs"))
    assert outputs.height == physics_inputs and server["paid"] == physics_inputs and server["duplicates"] == 0
    if mode == "sync":
        assert "recovered from the endpoint's stored completions" in resumed_log
        assert (outputs["via"] == "recovered").sum() > 0
    else:
        assert server["batches_created"] == 1 and "polling it instead of submitting again" in resumed_log

    # The key reached the server, and nothing of ours: no log, event, run record or table holds it.
    key = env["NEXA_FAULT_KEY"]
    assert key not in killed_log and key not in resumed_log
    for path in [*Path(dagster_home).rglob("*"), *Path(delta_root).rglob("*")]:
        assert not path.is_file() or key.encode() not in path.read_bytes(), path
    for table in Path(delta_root, "nexa").iterdir():  # parquet pages may be compressed: read them too
        assert key not in pl.read_delta(str(table)).write_ndjson(), table.name
