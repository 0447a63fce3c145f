"""The shell paths a user takes, in subprocesses, and the raw folder sensor on a real instance."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from conftest import PROJECT

from nexa_assets.definitions import build_defs, distill_job
from nexa_assets.partitions import domain_partitions
from nexa_assets.sensors import build_raw_folder_sensor
from resources.environment import Environment

BIN = Path(sys.executable).parent


def env_for(dagster_home, delta_root, raw_root) -> dict:
    """The commands' environment: this test's instance, tables, artifacts and MLflow store (an in-process
    MlflowTracking of an earlier test leaves its store in MLFLOW_TRACKING_URI, and so would the project's)."""
    here = Path(delta_root).parent
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "NEXA_DELTA_ROOT": str(delta_root),
        "NEXA_RAW_ROOT": str(raw_root),
        "NEXA_ARTIFACT_ROOT": str(here / "artifacts"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{here / 'mlflow.db'}",
    }


def test_definitions_validate(dagster_home, delta_root, raw_root):
    done = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "nexa_assets.definitions"],
        cwd=PROJECT,
        env=env_for(dagster_home, delta_root, raw_root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_dagster_asset_materialize_cli(dagster_home, delta_root, raw_root):
    """The README's commands on a fresh instance: add the domain, then materialize it."""
    added = subprocess.run(
        [str(BIN / "nexa-domains"), "add", "physics"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        env=env_for(dagster_home, delta_root, raw_root),
        timeout=300,
    )
    assert added.returncode == 0, added.stderr
    cmd = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "--select",
        "raw_documents+",
        "--partition",
        "physics",
        "-m",
        "nexa_assets.definitions",
        "--config-json",
        json.dumps(  # student_base, a direct child, reads for a few steps: the command is what is tested
            {
                "ops": {
                    "raw_documents": {"config": {"raw_root": str(raw_root)}},
                    "student_base": {"config": {"max_steps": 4}},
                }
            }
        ),
    ]
    done = subprocess.run(
        cmd, cwd=PROJECT, env=env_for(dagster_home, delta_root, raw_root), capture_output=True, text=True, timeout=500
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "RUN_SUCCESS" in done.stderr or "Finished execution" in done.stderr
    import polars as pl

    # `raw_documents+` is the asset and its direct children.
    inputs = pl.read_delta(str(delta_root / "nexa" / "teacher_inputs"))
    assert inputs.height > 0 and (inputs["domain"] == "physics").all()
    assert "raw_documents_quality" in done.stderr


def test_entry_points_exit_cleanly_in_a_loop(tmp_path):
    """Writes and reads through the project's Delta paths, 8 times in fresh interpreters: every exit
    must be 0 (a pyarrow-dataset read of a Delta table aborts at exit with deltalake 1.6)."""
    script = tmp_path / "roundtrip.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, polars as pl
        sys.path.insert(0, {str(PROJECT)!r})
        from resources.delta import DeltaStore
        store = DeltaStore(root_uri=sys.argv[1])
        store.append("t", pl.DataFrame({{"domain": ["a", "b"], "x": [1, 2]}}))
        assert store.read_partition("t", "a").height >= 1 and store.version("t") is not None
    """)
    )
    codes = [
        subprocess.run([sys.executable, str(script), str(tmp_path / "delta")], capture_output=True).returncode
        for _ in range(8)
    ]
    assert codes == [0] * 8


def test_importing_the_assets_touches_no_storage(tmp_path):
    """Importing a stage module builds no Definitions; building them creates no Delta root (the first
    write does)."""
    missing = tmp_path / "no-delta-yet"
    code = (
        "import sys, nexa_assets.distill; assert 'nexa_assets.definitions' not in sys.modules; "
        "import nexa_assets.definitions"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT,
        env={**os.environ, "NEXA_DELTA_ROOT": str(missing)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not missing.exists()


def sensor_ticker(sensor, instance):
    """Evaluate the sensor as the daemon does: its partition requests reach the instance."""

    def tick(cursor):
        result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result

    return tick


def test_raw_folder_sensor_adds_partitions_and_reruns_changed_domains(instance, tmp_path):
    raw = tmp_path / "raw"
    (raw / "physics").mkdir(parents=True)
    (raw / "physics" / "a.txt").write_text("A lever is a simple machine that multiplies force.")
    tick = sensor_ticker(build_raw_folder_sensor(distill_job, raw), instance)

    first = tick(None)
    assert [r.partition_key for r in first.run_requests] == ["physics"]
    assert list(first.dynamic_partitions_requests[0].partition_keys) == ["physics"]
    assert instance.get_dynamic_partitions("domain") == ["physics"]

    unchanged = tick(first.cursor)
    assert unchanged.run_requests == [] and not unchanged.dynamic_partitions_requests

    (raw / "geology").mkdir()
    (raw / "geology" / "rocks.md").write_text("# Rocks\n\nBasalt is an igneous rock formed from lava.")
    (raw / "physics" / "a.txt").write_text("A lever is a simple machine that multiplies an applied force.")
    changed = tick(unchanged.cursor)
    assert sorted(r.partition_key for r in changed.run_requests) == ["geology", "physics"]
    assert list(changed.dynamic_partitions_requests[0].partition_keys) == ["geology"]
    (raw / "empty").mkdir()  # a folder with no supported file: a partition, whose run will say why it failed
    assert [r.partition_key for r in tick(changed.cursor).run_requests] == ["empty"]


def test_raw_folder_sensor_runs_read_its_folder_and_a_restart_reruns_nothing_read(instance, tmp_path, monkeypatch):
    """The code location's sensor watches NEXA_RAW_ROOT and its runs read that folder, not data/raw. Each
    raw_documents records its folder's fingerprint, so a fresh sensor (empty cursor, as on the first
    `dagster dev` after nexa-run) requests nothing for a domain already read, and a run once a file changed."""
    raw, delta = tmp_path / "raw", tmp_path / "delta"
    (raw / "geology").mkdir(parents=True)
    rocks = raw / "geology" / "rocks.md"
    rocks.write_text("# Rocks\n\nBasalt is an igneous rock formed from lava that cooled quickly.")
    monkeypatch.setenv("NEXA_RAW_ROOT", str(raw))
    monkeypatch.setenv("NEXA_DELTA_ROOT", str(delta))
    defs = build_defs(Environment.read())
    tick = sensor_ticker(defs.resolve_sensor_def("raw_folder_sensor"), instance)

    [request] = tick(None).run_requests
    assert request.partition_key == "geology" and request.tags["nexa/reason"] == "new domain"
    assert request.run_config == {"ops": {"raw_documents": {"config": {"raw_root": str(raw)}}}}
    assert not delta.exists()  # nothing made it before the first write
    run = defs.resolve_job_def("distill_job").execute_in_process(
        run_config=request.run_config,
        partition_key="geology",
        instance=instance,
        asset_selection=[dg.AssetKey("raw_documents")],
    )
    assert run.success
    import polars as pl

    documents = pl.read_delta(str(delta / "nexa" / "raw_documents"))
    assert documents["domain"].to_list() == ["geology"] and documents["text"][0].startswith("Basalt")

    assert tick(None).run_requests == []  # a restart: what the domain's last run read is still there
    rocks.write_text("# Rocks\n\nBasalt is an igneous rock formed from lava that cooled fast.")
    changed = tick(None)
    assert [(r.partition_key, r.tags["nexa/reason"]) for r in changed.run_requests] == [
        ("geology", "raw files changed")
    ]
    assert tick(changed.cursor).run_requests == []  # requested once, until it changes again


def test_nexa_domains_adds_lists_and_removes_domains(dagster_home, raw_root, monkeypatch, capsys):
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "NEXA_RAW_ROOT": str(raw_root)}

    def nexa_domains(*args):
        return subprocess.run(
            [str(BIN / "nexa-domains"), *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
        )

    missing = nexa_domains("add", "physics", "geology")
    assert missing.returncode == 2 and f"geology: no folder {raw_root / 'geology'}" in missing.stderr
    assert "nothing added" in missing.stderr and "--force" in missing.stderr
    added = nexa_domains("add", "physics")
    assert added.returncode == 0 and "physics: added" in added.stdout, added.stderr
    from nexa_assets.domains import main

    monkeypatch.setenv("NEXA_RAW_ROOT", str(raw_root))
    assert main(["add", "--force", "geology"]) == 0
    listed = nexa_domains("list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"physics +\d+ files in", listed.stdout) and re.search(r"geology +no folder", listed.stdout)
    assert "not domains yet (nexa-domains add NAME): biology, chemistry" in listed.stdout
    capsys.readouterr()
    assert main(["remove", "physics"]) == 2 and "the raw folder sensor would add it back" in capsys.readouterr().err
    assert main(["remove", "geology"]) == 0
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_dynamic_partitions(domain_partitions.name) == ["physics"]


@pytest.mark.slow
def test_nexa_run_set_names_what_is_wrong(dagster_home):
    from nexa_assets.cli import ops_config
    from nexa_assets.definitions import defs

    assert ops_config(defs, "nexa_job", ["student_checkpoint.lora.r=8", "teacher_inputs.max_pairs_per_passage=4"]) == {
        "student_checkpoint": {"config": {"lora": {"r": 8}}},
        "teacher_inputs": {"config": {"max_pairs_per_passage": 4}},
    }
    for bad, words in (
        ("student_checkpoint=1", "expected ASSET.KEY=VALUE"),
        ("nope.x=1", "no asset 'nope'"),
        ("raw_documents.epochs=1", "raw_documents has no setting 'epochs'"),
    ):
        with pytest.raises(SystemExit, match=words):
            ops_config(defs, "nexa_job", [bad])


def test_nexa_distill_cli_exits_cleanly_every_time(dagster_home, delta_root, raw_root):
    """The main command (write, read back, print counts), twice in fresh interpreters."""
    runs = [
        subprocess.run(
            [str(BIN / "nexa-distill"), "physics"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            env=env_for(dagster_home, delta_root, raw_root),
            timeout=300,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr[-3000:]
    # a check per distill asset, restatements included
    assert "physics: run" in runs[-1].stdout and "6/6 checks passed" in runs[-1].stdout
    assert "sft_dataset" in runs[-1].stdout and "physics=" in runs[-1].stdout


@pytest.mark.slow
def test_nexa_run_then_the_next_round_by_hand(dagster_home, delta_root, raw_root, tmp_path):
    """The README's main command for one domain: the whole graph, a few training steps (the learning test
    trains for real), a line per stage on the terminal and the whole event log in a file."""
    env = {
        **env_for(dagster_home, delta_root, raw_root),
        "NEXA_REPORT_DIR": str(tmp_path / "reports"),
        "NEXA_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    steps = [
        arg
        for stage in ("student_base", "student_checkpoint")
        for arg in ("--set", f"{stage}.max_steps=8", "--set", f"{stage}.logging_steps=1")
    ]
    steps += ["--set", "student_base.student={hidden_size: 64, layers: 2, heads: 2, vocab_size: 1024}"]
    steps += ["--set", "eval_predictions.max_new_tokens=8"]
    run = subprocess.run(
        [str(BIN / "nexa-run"), "physics", *steps], cwd=PROJECT, capture_output=True, text=True, env=env, timeout=900
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "physics: run" in run.stdout and "checks passed" in run.stdout and "FAILED" not in run.stdout
    assert "Leaderboard" in run.stdout and "| 1 | physics |" in run.stdout
    assert (tmp_path / "reports" / "leaderboard.html").is_file()
    for table in ("eval_predictions", "eval_metrics", "feedback_set"):
        assert f"{table:16s}" in run.stdout or table in run.stdout
    assert "steps=8 " in run.stdout  # --set reached the trainer
    # one screen: a line per stage, no event log, no progress bars, no library warnings
    output = run.stdout + run.stderr
    assert len(output.splitlines()) < 60 and "it/s]" not in output and "Warning" not in output, output
    assert " student_checkpoint " in output and " ok " in output
    log = Path(re.search(r"log (\S+\.log)", run.stdout).group(1))
    assert "STEP_SUCCESS" in log.read_text() and "loss_decreased" in log.read_text()
    # The next round, by hand, as the README says: round_job, everything downstream of teacher_inputs but
    # the release (a plain `--select 'teacher_inputs*'` would reach the observed deployment and fail)
    round1 = subprocess.run(
        [str(BIN / "nexa-run"), "physics", "--job", "round_job", "--set", "eval_predictions.max_new_tokens=8"]
        + ["--set", "student_checkpoint.max_steps=12", "--set", "student_checkpoint.logging_steps=1"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert round1.returncode == 0, round1.stdout[-2000:] + round1.stderr[-3000:]
    import polars as pl

    assert pl.read_delta(str(delta_root / "nexa" / "student_checkpoint"))["round"].to_list() == [1]
    assert sorted(pl.read_delta(str(delta_root / "nexa" / "eval_history"))["round"].unique()) == [0, 1]
