"""Sweeps: a grid's keys are checked like any setting; each point is a run of the training and evaluation assets with
its own settings and tags, at most max_parallel at a time; a killed point is run again alone; sweep_results has one
row per point (its checkpoint, its scores beside the base's) and the report plots them."""

import json

import dagster as dg
import polars as pl
import pytest
from release_helpers import copy_tables, graph_resources, read

from nexa_assets.definitions import build_defs
from nexa_assets.sweep import ATTEMPT_TAG, SweepSettings, point_runs, sweep_sensor
from nexa_core.sweep import POINT_TAG, SWEEP_TAG, SweepError, check_grid, grid_points, is_default
from nexa_forge.settings import SettingError, grid_values
from resources.environment import Environment


def test_a_misspelt_or_mistyped_grid_key_is_refused_naming_it():
    with pytest.raises(SweepError, match=r"'num_trian_epochs'.*did you mean num_train_epochs"):
        check_grid(grid_values(["student_checkpoint.num_trian_epochs=1,2"]))
    with pytest.raises(SweepError, match="learning_rate"):
        check_grid(grid_values(["student_checkpoint.learning_rate=1e-4,fast"]))
    with pytest.raises(SettingError, match="ASSET.KEY=V1,V2"):
        grid_values(["learning_rate=1e-4"])
    grid = check_grid(
        grid_values(["student_checkpoint.learning_rate=1e-4,2e-4,5e-4", "student_base.num_train_epochs=3,6"])
    )
    assert grid["student_checkpoint.learning_rate"] == [1e-4, 2e-4, 5e-4]  # 1e-4 a number, not text
    assert len(grid_points(grid)) == 6
    drawn = grid_points(grid, sample=3, seed=1)
    assert len(drawn) == 3 and drawn == grid_points(grid, sample=3, seed=1) and drawn != grid_points(grid, 3, seed=2)


def test_the_default_point_is_the_one_whose_settings_are_all_defaults():
    assert is_default({"student_checkpoint.seed": 17}) and not is_default({"student_checkpoint.seed": 18})
    # a replay's pinned inputs are no stage setting: such a point is not the default, and no error
    pinned = {"student_base.documents_version": 3, "student_checkpoint.sft_version": 2, "student_base.replay_of": 1}
    assert not is_default(pinned)


def environment(root) -> dict:
    return {
        "NEXA_DELTA_ROOT": str(root / "delta"),
        "NEXA_ARTIFACT_ROOT": str(root / "artifacts"),
        "NEXA_REPORT_DIR": str(root / "reports"),
        "NEXA_RAW_ROOT": str(root / "raw"),
        "MLFLOW_TRACKING_URI": graph_resources(root)["tracking"].tracking_uri,
        "NEXA_BASE_MODEL": "nexa-tiny-llama",
    }


RUN_KEY = "dagster/run_key"


def tick(defs, instance) -> list[dg.RunRequest]:
    """The sensor's requests that the daemon would launch: it skips a run key that already has a run."""
    context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
    launched = {r.tags.get(RUN_KEY) for r in instance.get_runs()}
    return [r for r in sweep_sensor(context).run_requests if r.run_key is None or r.run_key not in launched]


def run(defs, instance, request: dg.RunRequest):
    """The requested run, in this process; a failed step's error in the assertion."""
    result = defs.resolve_job_def(request.job_name).execute_in_process(
        run_config=request.run_config,
        tags={**request.tags, **({RUN_KEY: request.run_key} if request.run_key else {})},
        partition_key=request.partition_key,
        asset_selection=request.asset_selection,
        instance=instance,
        raise_on_error=False,
    )
    assert result.success, [str(e.step_failure_data.error) for e in result.get_step_failure_events()]
    return result


@pytest.mark.slow
def test_a_sweep_runs_each_point_with_its_settings_reruns_a_killed_point_alone_then_a_release_of_it_replays(
    evaluated_physics, tmp_path
):
    root = copy_tables(evaluated_physics["root"], tmp_path)
    instance = evaluated_physics["instance"]
    defs = build_defs(Environment.read(environment(root)))
    config = {
        "domain": "physics",
        "grid": ["student_checkpoint.learning_rate=1e-3,3e-3", "student_checkpoint.max_steps=8,16"],
        "max_parallel": 2,
        # the smoke size: short answers, no suite roles beyond the two the tiny student has
        "settings": [
            "eval_predictions.max_new_tokens=8",
            "eval_metrics.n_resamples=200",
            "benchmark_scores.n_resamples=200",
        ],
    }
    typo = {**config, "grid": ["student_checkpoint.lerning_rate=1e-3,3e-3"]}
    refused = defs.resolve_job_def("sweep_job").execute_in_process(
        run_config={"ops": {"sweep_plan": {"config": typo}}}, instance=instance, raise_on_error=False
    )
    assert not refused.success and "did you mean learning_rate" in str(
        refused.get_step_failure_events()[0].step_failure_data.error
    )
    plan = defs.resolve_job_def("sweep_job").execute_in_process(
        run_config={"ops": {"sweep_plan": {"config": config}}}, instance=instance
    )
    sweep = instance.get_run_by_id(plan.run_id).tags[SWEEP_TAG]

    first = tick(defs, instance)
    assert [r.tags[POINT_TAG] for r in first] == ["0", "1"]  # max_parallel: two at once
    assert all(r.tags[SWEEP_TAG] == sweep and r.partition_key == "physics" for r in first)
    assert {k.to_user_string() for k in first[0].asset_selection} == {
        "student_checkpoint",
        "eval_predictions",
        "eval_metrics",
        "benchmark_scores",
    }
    for request in first:
        assert run(defs, instance, request).success
    second = tick(defs, instance)
    assert [r.tags[POINT_TAG] for r in second] == ["2", "3"]
    assert run(defs, instance, second[0]).success
    # point 3 is killed before it finishes: its run ends canceled
    killed = defs.resolve_job_def(second[1].job_name)
    doomed = instance.create_run_for_job(killed, run_config=second[1].run_config, tags=second[1].tags)
    instance.report_run_canceled(doomed)
    again = tick(defs, instance)
    assert [(r.tags[POINT_TAG], r.tags[ATTEMPT_TAG]) for r in again] == [("3", "1")]  # that point alone, once more
    assert run(defs, instance, again[0]).success

    results = tick(defs, instance)
    assert [r.job_name for r in results] == ["sweep_results_job"]
    assert run(defs, instance, results[0]).success
    assert tick(defs, instance) == []

    rows = read(root, "sweep_results").filter(pl.col("sweep_id") == sweep).sort("point")
    assert rows["point"].to_list() == [0, 1, 2, 3] and rows["checkpoint_id"].null_count() == 0
    checkpoints = read(root, "checkpoint_history")
    points = grid_points(grid_values(config["grid"]))
    for row, point in zip(rows.iter_rows(named=True), points):
        assert json.loads(row["settings"]) == point
        made = checkpoints.filter(pl.col("checkpoint_id") == row["checkpoint_id"]).row(0, named=True)
        recorded = json.loads(made["settings"])  # read back from the checkpoint's own record
        assert recorded["learning_rate"] == point["student_checkpoint.learning_rate"]
        assert recorded["max_steps"] == point["student_checkpoint.max_steps"] and made["steps"] == recorded["max_steps"]
        measures = {s["measure"] for s in row["scores"]}
        assert any(m.startswith("test") for m in measures) and any(m.startswith("suite") for m in measures)
        assert all(s["ci_low"] <= s["mean"] <= s["ci_high"] and s["base_mean"] is not None for s in row["scores"])
    runs = point_runs(instance, sweep)
    assert [len(runs[p]) for p in range(4)] == [1, 1, 1, 2]
    report = (root / "reports" / f"sweep-physics-{sweep}.html").read_text()
    assert "data:image/png;base64," in report and "Best point per measure" in report

    resumed = SweepSettings(**config).plan()[0]
    assert resumed == sweep  # the same settings are the same sweep: relaunched, nothing reruns
    defs.resolve_job_def("sweep_job").execute_in_process(
        run_config={"ops": {"sweep_plan": {"config": config}}}, instance=instance
    )
    assert tick(defs, instance) == []  # relaunched: nothing reruns
    replay_the_release_of_the_newest_checkpoint(defs, instance, root)


def replay_the_release_of_the_newest_checkpoint(defs, instance, root) -> None:
    """Release the domain's checkpoint (a sweep's last point), move the SFT set on, replay the release from its
    record (the same SFT rows by time travel, the same settings, scores within the recorded intervals), then vacuum
    the release's SFT version away: the replay names it and launches nothing."""
    from deltalake import DeltaTable, write_deltalake
    from release_helpers import candidate_scores, materialize_release, passing_gate

    checkpoint = read(root, "student_checkpoint").row(0, named=True)
    gate = passing_gate(candidate_scores(root, "physics", checkpoint["checkpoint_id"]))
    assert materialize_release(instance, root, "physics", **gate).success
    released = read(root, "release_history").row(-1, named=True)
    # the SFT set moves on after the release: half its train rows are gone from the newest version
    sft = str(root / "delta" / "nexa" / "sft_dataset")
    rows = pl.read_delta(sft)
    fewer = pl.concat([rows.filter(pl.col("split") != "train"), rows.filter(pl.col("split") == "train").head(8)])
    write_deltalake(sft, fewer.to_arrow(), mode="overwrite")

    replay = {"ops": {"replay_plan": {"config": {"domain": "physics", "version": released["model_version"]}}}}
    plan = defs.resolve_job_def("replay_job").execute_in_process(run_config=replay, instance=instance)
    tags = instance.get_run_by_id(plan.run_id).tags
    settings = json.loads(tags["nexa/replay_settings"])
    assert settings["student_checkpoint.sft_version"] == released["sft_version"] == checkpoint["sft_version"]
    assert settings["student_checkpoint.max_steps"] == json.loads(checkpoint["settings"])["max_steps"]
    (point,) = tick(defs, instance)
    assert point.tags[SWEEP_TAG] == tags[SWEEP_TAG]
    assert run(defs, instance, point).success
    (results,) = tick(defs, instance)
    assert run(defs, instance, results).success

    replayed = read(root, "sweep_results").filter(pl.col("sweep_id") == tags[SWEEP_TAG]).row(0, named=True)
    again = (
        read(root, "checkpoint_history").filter(pl.col("checkpoint_id") == replayed["checkpoint_id"]).row(0, named=True)
    )
    assert again["sft_version"] == released["sft_version"] and again["train_examples"] == checkpoint["train_examples"]
    assert "replay-physics-v" in again["artifact_uri"] and again["artifact_uri"] != checkpoint["artifact_uri"]
    output = next(e for e in plan.all_events if e.event_type_value == "STEP_OUTPUT").step_output_data
    recorded = {r["measure"]: r["student"] for r in output.metadata["recorded"].value}
    assert set(recorded) == {s["measure"] for s in replayed["scores"]}
    for score in replayed["scores"]:  # the same data, settings and seed on the same machine: within the interval
        original = recorded[score["measure"]]
        assert original["ci_low"] <= score["mean"] <= original["ci_high"], (score, original)

    # the release's SFT version vacuumed away: the plan says so and launches nothing
    write_deltalake(sft, fewer.head(30).to_arrow(), mode="overwrite")
    DeltaTable(sft).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    refused = defs.resolve_job_def("replay_job").execute_in_process(
        run_config=replay, instance=instance, raise_on_error=False
    )
    message = str(refused.get_step_failure_events()[0].step_failure_data.error)
    assert f"sft_dataset v{released['sft_version']} cannot be read any more" in message


def test_a_wait_goes_on_through_a_webserver_that_misses_a_poll(monkeypatch):
    from nexa_forge import client
    from nexa_forge.client import NexaForgeClient, ServerUnreachable

    answers = iter([ServerUnreachable("busy"), ServerUnreachable("busy"), "done"])

    class State:
        finished = True

        def progress(self):
            return "done"

    def read():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return State()

    assert isinstance(NexaForgeClient._wait(read, "run x", None, 0.01, None), State)
    monkeypatch.setattr(client, "UNREACHABLE_GRACE", 0.05)

    def never():
        raise ServerUnreachable("gone")

    with pytest.raises(ServerUnreachable):
        NexaForgeClient._wait(never, "run x", None, 0.01, None)
