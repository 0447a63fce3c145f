import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

for key, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    # the commands and code locations the tests start build the config-built student, not the real base
    "NEXA_BASE_MODEL": "nexa-tiny-llama",
}.items():
    os.environ[key] = value

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE_RAW = PROJECT / "data" / "raw"

# Seconds each file's tests took in a full run on 2 cores (pytest --durations, 2026-12-05; test_bench, test_sweep and
# test_template_families from a 2026-12-07 run, scaled to it). scripts/test.sh gives
# the files to the workers in this order (--no-loadscope-reorder), the longest first, so that the real base's
# test does not start last while the other worker sits idle.
FILE_SECONDS = {
    "test_real_base.py": 654,
    "test_bench.py": 900,
    "test_sweep.py": 250,
    "test_cli_and_sensor.py": 203,
    "test_template_families.py": 110,
    "test_train.py": 135,
    "test_release.py": 126,
    "test_serve.py": 112,
    "test_evaluate.py": 97,
    "test_readme.py": 82,
    "test_sdk.py": 75,
    "test_kd.py": 71,
    "test_pretrain.py": 59,
    "test_generate.py": 50,
    "test_progress.py": 36,
    "test_parallel_writes.py": 52,
    "test_teacher_faults.py": 51,
    "test_ui.py": 50,
    "test_postgres.py": 22,
    "test_benchmark.py": 30,
    "test_suite_builder.py": 5,
    "test_bases.py": 16,
    "test_metric_registry.py": 9,
    "test_restatements.py": 12,
}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: a file's own order is kept


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def instance(dagster_home):
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as inst:
        yield inst


@pytest.fixture
def delta_root(tmp_path):
    root = tmp_path / "delta"
    root.mkdir()
    return root


@pytest.fixture
def raw_root(tmp_path):
    """A copy of the shipped sample corpus, so tests can add bad files to it."""
    root = tmp_path / "raw"
    shutil.copytree(SAMPLE_RAW, root)
    return root


def start_openai_server(*flags: str) -> tuple[subprocess.Popen, str]:
    """tests/openai_server.py on 127.0.0.1: (process, base URL)."""
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT / "tests" / "openai_server.py"), "--port", "0", *flags],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    )
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def stop_by_pid(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # never leave a server behind
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def teacher_server():
    """A real OpenAI-compatible HTTP server on 127.0.0.1, stopped by its PID."""
    servers = []

    def start(*flags: str) -> str:
        proc, base = start_openai_server(*flags)
        servers.append(proc)
        return base

    yield start
    for proc in servers:
        stop_by_pid(proc)


def server_calls(base_url: str) -> int:
    with urllib.request.urlopen(f"{base_url}/stats", timeout=5) as response:
        return json.load(response)["calls"]


@pytest.fixture(scope="session")
def evaluated_physics(tmp_path_factory):
    """physics through the real graph once per test session, whichever xdist worker asks first (a small
    student, a few steps): distilled, read, fine-tuned, evaluated and benchmarked. The release and serving
    tests work on copies of its tables, each worker with its own copy of the build's Dagster instance."""
    import dagster as dg
    from filelock import FileLock
    from release_helpers import evaluate_domain

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker's basetemp sits in one folder per session
        shared = shared.parent
    root = shared / "evaluated_physics"
    with FileLock(str(root) + ".lock"):
        if not (root / "evaluated").exists():
            shutil.rmtree(root, ignore_errors=True)
            (root / "home").mkdir(parents=True)
            with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
                evaluate_domain(instance, root, "physics")
            (root / "evaluated").touch()
    home = shutil.copytree(root / "home", tmp_path_factory.mktemp("evaluated_physics") / "home")
    with dg.instance_for_test(temp_dir=str(home)) as instance:  # the build's runs and materializations
        yield {"root": root, "instance": instance}
