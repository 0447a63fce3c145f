"""A domain taken through the real graph for the release and serving tests (a small student, a few
steps), and model_release materialized on a copy of its tables."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import polars as pl
from conftest import SAMPLE_RAW, stop_by_pid
from graph_helpers import materialize_domain, resources

from nexa_assets import benchmark, evaluate, pretrain, release, train
from nexa_core.release.gate import GateConfig, gate_metric, score_of
from resources.launcher import TrainingLauncher
from resources.teacher import TeacherResource
from resources.tracking import MlflowTracking

SMALL_STUDENT = {"student": {"hidden_size": 64, "layers": 2, "heads": 2, "vocab_size": 1024}}
READ = {**SMALL_STUDENT, "max_steps": 40}
SFT = {"max_steps": 120, "logging_steps": 1}  # enough steps for short answers, not silence
EVAL_GRAPH = [
    pretrain.student_base,
    train.student_checkpoint,
    evaluate.eval_predictions,
    evaluate.eval_metrics,
    benchmark.benchmark_scores,
]
NO_JUDGE = TeacherResource(backend="none", model="none")


def graph_resources(root: Path, judge: TeacherResource = NO_JUDGE) -> dict:
    """Resources on `root`: its Delta tables, artifacts and MLflow store."""
    return {
        **resources(root / "delta"),
        "judge": judge,
        "launcher": TrainingLauncher(artifact_root=str(root / "artifacts")),
        "tracking": MlflowTracking(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_location=str(root / "mlruns")
        ),
    }


def eval_run_config(
    sft: dict,
    read: dict | None = None,
    max_new_tokens: int = 64,
    roles=("student", "base"),
    only: list[str] | None = None,
) -> dict:
    """Run config of the eval graph (of the stages in `only`, when given)."""
    ops = {
        "student_base": {"config": read or READ},
        "student_checkpoint": {"config": sft},
        "eval_predictions": {"config": {"max_new_tokens": max_new_tokens, "roles": list(roles)}},
        "eval_metrics": {"config": {"n_resamples": 500}},
        "benchmark_scores": {"config": {"n_resamples": 500}},
    }
    return {"ops": {name: op for name, op in ops.items() if only is None or name in only}}


def evaluate_domain(instance, root: Path, domain: str, only: list[str] | None = None, **settings):
    """`domain` distilled from the sample corpus under root/raw (copied once), then read, fine-tuned,
    evaluated and benchmarked (the stages in `only`, when given; `settings` as eval_run_config's)."""
    if not (root / "raw").exists():
        shutil.copytree(SAMPLE_RAW, root / "raw")
    assert materialize_domain(instance, domain, root / "raw", root / "delta").success
    result = dg.materialize(
        EVAL_GRAPH,
        partition_key=domain,
        instance=instance,
        resources=graph_resources(root),
        selection=only,
        run_config=eval_run_config(settings.pop("sft", SFT), only=only, **settings),
    )
    assert result.success
    return result


def copy_tables(source: Path, target: Path) -> Path:
    """The Delta tables and MLflow store of `source` under `target` (checkpoint files stay where they
    are, read only)."""
    shutil.copytree(source / "delta", target / "delta")
    shutil.copy(source / "mlflow.db", target / "mlflow.db")
    return target


def materialize_release(instance, root: Path, domain: str, **gate):
    """model_release for `domain` on root's tables with the gate's settings; never raises (a refusal
    fails the step through the blocking check)."""
    return dg.materialize(
        [release.model_release],
        partition_key=domain,
        instance=instance,
        resources=graph_resources(root),
        raise_on_error=False,
        run_config={"ops": {"model_release": {"config": gate}}},
    )


def read(root: Path, table: str, version: int | None = None) -> pl.DataFrame:
    return pl.read_delta(str(root / "delta" / "nexa" / table), version=version)


def candidate_scores(root: Path, domain: str, checkpoint_id: str, champion_id: str | None = None) -> dict:
    """The gate's metric and the scores the gate will compare, read back from the history tables."""
    history = read(root, "eval_history")
    benchmarks = read(root, "benchmark_history")
    metric = gate_metric(GateConfig(), checkpoint_id, history, benchmarks)
    scores = {role: score_of(checkpoint_id, role, metric, history, benchmarks) for role in ("student", "base")}
    if champion_id:
        scores["champion"] = score_of(champion_id, "student", metric, history, benchmarks)
    return {"metric": metric, **scores}


def passing_gate(scores: dict, margin: float = 0.01) -> dict:
    """Gate settings this candidate passes: rule `mean`, thresholds `margin` below its measured lifts."""
    gate = {"rule": "mean", "min_lift_over_base": scores["student"].mean - scores["base"].mean - margin}
    if scores.get("champion"):
        gate["min_lift_over_champion"] = scores["student"].mean - scores["champion"].mean - margin
    return gate


def check_of(result, name: str = "promotion_gate"):
    return next(
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.asset_check_evaluation_data.check_name == name
    )


NEXA_SERVE = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "nexa-serve")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command_env(root: Path) -> dict:
    """The environment nexa-serve reads: this root's Delta tables, MLflow store and Dagster home."""
    return {
        **os.environ,
        "NEXA_DELTA_ROOT": str(root / "delta"),
        "DAGSTER_HOME": str(root / "serve_home"),
        "MLFLOW_TRACKING_URI": graph_resources(root)["tracking"].tracking_uri,
    }


def champion_answers(merged_uri: str, conversations: list[list[dict]], max_new_tokens: int) -> list[dict]:
    """What the champion itself says ({"prediction", "new_tokens"}), one conversation at a time, greedy
    (nexa_core.evaluate.generate), in the precision nexa-serve loads it in (the one it was saved in)."""
    from nexa_core.evaluate.generate import generate_answers
    from nexa_core.models.load import load_student
    from nexa_core.recipe import GenerateConfig

    model, tokenizer = load_student(merged_uri, dtype="auto")
    config = GenerateConfig.load(overrides={"max_new_tokens": max_new_tokens, "batch_size": 1})
    return generate_answers(model, tokenizer, conversations, config)


def start_nexa_serve(root: Path, domain: str, served_model: str, *options: str, timeout: float = 300) -> dict:
    """`nexa-serve DOMAIN [options]` on a free port of 127.0.0.1, once it has answered a first question."""
    from openai import OpenAI

    port = free_port()
    log = (root / "nexa-serve.err").open("w")
    proc = subprocess.Popen(
        [NEXA_SERVE, domain, *options, "--port", str(port), "--device", "cpu"],
        env=command_env(root),
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
    question = [{"role": "user", "content": "What is a photon?"}]
    deadline = time.monotonic() + timeout
    while True:
        try:
            first = client.chat.completions.create(model=served_model, messages=question, temperature=0, max_tokens=8)
            break
        except Exception:  # not listening yet  # noqa: BLE001
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_by_pid(proc)
                log.close()
                raise AssertionError(
                    f"nexa-serve gave no answer within {timeout:.0f} s: {(root / 'nexa-serve.err').read_text()[-3000:]}"
                ) from None
            time.sleep(0.2)
    return {
        "proc": proc,
        "log": log,
        "port": port,
        "base_url": base_url,
        "client": client,
        "model": served_model,
        "first": first,
        "announcement": proc.stdout.readline(),
    }


def stop_nexa_serve(server: dict) -> None:
    stop_by_pid(server["proc"])
    server["log"].close()
