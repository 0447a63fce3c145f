"""A domain taken through the real graph for the release and serving tests (a small student, a few
steps), and model_release materialized on a copy of its tables."""

import shutil
from pathlib import Path

import dagster as dg
import polars as pl
from conftest import SAMPLE_RAW
from graph_helpers import materialize_domain, resources

from nexa_assets import benchmark, evaluate, pretrain, release, train
from nexa_core.release import GateConfig, gate_metric, score_of
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
        "student_base": {"config": {"overrides": read or READ}},
        "student_checkpoint": {"config": {"overrides": sft}},
        "eval_predictions": {"config": {"overrides": {"max_new_tokens": max_new_tokens}, "roles": list(roles)}},
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
