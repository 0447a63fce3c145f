"""bench/feedback_round.py at its smoke size: the benchmark behind the README's learning figures runs."""

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_feedback_round_benchmark_runs_at_smoke_size():
    run = subprocess.run([sys.executable, "bench/feedback_round.py", "--smoke"], cwd=PROJECT, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    out = run.stdout
    assert out.startswith("machine: ") and "command: " in out
    assert "physics    token_f1         0" in out and "physics    token_f1         1" in out  # both rounds scored
    assert "Benchmark suites" in out and "physics_facts" in out and "0.25" in out  # beside chance
    assert "Topics round 0 found weak" in out
