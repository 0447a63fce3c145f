"""nexa_forge against a real `dagster dev` (webserver and daemon), started here and stopped by its PID:
domains added and a backfill of two domains launched from the SDK, followed to the end and read back
(run status, materialization metadata next to the Delta table on disk, logs), the leaderboard read
back, a distilled student promoted and listed (SDK and `nexa distilled`), and the errors a wrong URL or an
unknown domain give, from the SDK and from `nexa`."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from conftest import PROJECT, SAMPLE_RAW

from nexa_core import schemas
from nexa_forge import (
    CodeLocationError,
    NexaForgeClient,
    NexaForgeError,
    ServerUnreachable,
    UnknownDomain,
    openai_teacher,
)
from nexa_forge.cli import main as nexa

pytestmark = pytest.mark.slow

DOMAINS = ["physics", "chemistry"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed_eval_history(delta: Path) -> None:
    """Two evaluated checkpoints, the rows eval_metrics appends, for the leaderboard asset to rank."""
    evaluated = datetime(2026, 11, 1, tzinfo=timezone.utc)
    rows = [
        {
            "domain": domain,
            "round": 0,
            "checkpoint_id": checkpoint,
            "sft_version": 0,
            "model_role": role,
            "topic": "__all__",
            "metric": "token_f1",
            "mean": mean,
            "ci_low": mean - half,
            "ci_high": mean + half,
            "n": 50,
            "created_at": evaluated,
        }
        for domain, checkpoint, student, base in (
            ("physics", "ckpt-physics-0001", 0.40, 0.10),
            ("chemistry", "ckpt-chemistry-01", 0.20, 0.15),
        )
        for role, mean, half in (("student", student, 0.10), ("base", base, 0.05))
    ]
    pl.DataFrame(rows, schema=schemas.EVAL_HISTORY).write_delta(str(delta / "nexa" / "eval_history"))


def seed_distilled_student(root: Path) -> str:
    """A distilled physics student as kd_job records one (student_distilled; distilled_scores, where it beats the
    base and keeps 0.96 of its teacher; its teacher in checkpoint_history), its weights a config-built tiny Llama:
    what distilled_release reads. Its distilled_id."""
    from nexa_core.train.student import MANIFEST, build_default_student

    texts = (SAMPLE_RAW / "physics" / "optics.txt").read_text().split(". ")
    folder = build_default_student(texts, root / "distilled", hidden_size=32, layers=2, heads=2, vocab_size=300)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "base_model_path": str(folder)}))  # as kd's stage writes
    delta, distilled_id, teacher = root / "delta" / "nexa", "distilled-physics-01", "ckpt-physics-0001"
    checkpoint = {"domain": "physics", "checkpoint_id": teacher, "round": 0, "sft_version": 0, "base_id": "base-01"}
    pl.DataFrame([{**checkpoint, "base_model": "nexa-tiny-llama"}], schema=schemas.STUDENT_CHECKPOINT).write_delta(
        str(delta / "checkpoint_history")
    )
    student = {
        "domain": "physics",
        "distilled_id": distilled_id,
        "teacher_id": teacher,
        "teacher_uri": str(root / "teacher"),
        "sft_version": 0,
        "logits_id": "logits-01",
        "logits_version": 0,
        "model_uri": str(folder),
        "pruned_sft_uri": None,
        "kept_layers": "[0, 3]",
        "teacher_layers": 4,
        "parameters": 100_000,
        "teacher_parameters": 200_000,
        "steps": 8,
        "first_loss": 5.0,
        "final_loss": 4.0,
        "wall_seconds": 10.0,
        "sft_only_final_loss": None,
        "trained_tokens": 4096,
        "precision": "fp32",
        "device": "cpu",
        "files_sha256": "{}",
        "kd_config": "{}",
    }
    nullable = {"pruned_sft_uri": pl.String, "sft_only_final_loss": pl.Float64}
    pl.DataFrame([student], schema_overrides=nullable).write_delta(str(delta / "student_distilled"))
    scores = [
        {"model_role": role, "source": "test", "metric": "token_f1", "mean": mean, "ci_low": mean - 0.05}
        | {"ci_high": mean + 0.05, "n": 60, "parameters": size, "new_tokens_per_s": speed}
        for role, mean, size, speed in (
            ("student", 0.48, 100_000, 300.0),
            ("teacher", 0.50, 200_000, 150.0),
            ("base", 0.20, 200_000, 150.0),
        )
    ]
    frame = pl.DataFrame(scores, schema=schemas.DISTILLED_SCORES).with_columns(
        domain=pl.lit("physics"), distilled_id=pl.lit(distilled_id)
    )
    frame.write_delta(str(delta / "distilled_scores"))
    return distilled_id


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to dagster dev's whole session (start_new_session: nothing else is in it): its webserver,
    daemon and code servers stop at once, not one after another on dagster dev's own 60 s timeouts."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)  # measured: it does not exit within 30 s (its daemon), so not long
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session (start_new_session): nothing else is in it
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    root = tmp_path_factory.mktemp("forge")
    home, delta, corpus, watched = root / "dagster_home", root / "delta", root / "corpus", root / "raw"
    home.mkdir()
    watched.mkdir()  # empty, so the raw folder sensor launches nothing of its own; the runs read `corpus`
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    for domain in DOMAINS:
        shutil.copytree(SAMPLE_RAW / domain, corpus / domain)
    seed_eval_history(delta)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "NEXA_DELTA_ROOT": str(delta),
        "NEXA_RAW_ROOT": str(watched),
        "NEXA_ARTIFACT_ROOT": str(root / "artifacts"),
        "NEXA_REPORT_DIR": str(root / "reports"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
    }
    url = f"http://127.0.0.1:{free_port()}"
    log = root / "dagster_dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster"),
                "dev",
                "-m",
                "nexa_assets.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                url.rsplit(":", 1)[1],
            ],
            cwd=PROJECT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    forge = NexaForgeClient(url)
    try:
        deadline, started = time.monotonic() + 240, time.monotonic()
        while True:  # the webserver answers first; the code location loads after it
            try:
                forge.domains()
                break
            except CodeLocationError as exc:  # it will not load by waiting
                pytest.fail(f"dagster dev could not load the code location: {exc}")
            except NexaForgeError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dagster dev is not serving the code location: {exc}\n{log.read_text()[-4000:]}")
                time.sleep(1)
        print(f"dagster dev ready in {time.monotonic() - started:.1f} s at {url}")
        # Launched now, so it runs beside the backfill of the test that follows
        leaderboard_run = forge.run(None, assets=["leaderboard"])
        yield SimpleNamespace(
            forge=forge, url=url, root=root, delta=delta, corpus=corpus, log=log, leaderboard_run=leaderboard_run
        )
    finally:
        stop(proc)


def test_the_sdk_never_imports_the_code_location():
    """A client: it works where only the webserver's URL is reachable, without the pipeline's code."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, nexa_forge.cli; print(' '.join(sys.modules))"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert "nexa_forge.client" in loaded
    assert not {m.split(".")[0] for m in loaded} & {"nexa_assets", "nexa_core", "resources"}


def test_a_wrong_url_is_a_clear_error(dagster_dev, capsys):
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable, match=f"no Dagster webserver answers at {nobody}.*dagster dev"):
        NexaForgeClient(nobody).domains()
    # a Dagster webserver, but not at this path
    with pytest.raises(ServerUnreachable, match=r"no Dagster GraphQL API is at .*/nexa/graphql; check the URL"):
        NexaForgeClient(f"{dagster_dev.url}/nexa").domains()
    with pytest.raises(NexaForgeError, match="not a webserver URL"):
        NexaForgeClient("127.0.0.1:3000")
    assert nexa(["--url", nobody, "domains", "list"]) == 2
    assert f"nexa: no Dagster webserver answers at {nobody}" in capsys.readouterr().err


def test_a_backfill_of_two_domains_completes_and_its_results_are_read_back(dagster_dev, capsys):
    forge = dagster_dev.forge
    assert [forge.add_domain(domain) for domain in DOMAINS] == [True, True]
    assert forge.add_domain("physics") is False  # already a domain
    assert sorted(forge.domains()) == sorted(DOMAINS)

    started = time.monotonic()
    backfill_id = forge.backfill(
        DOMAINS, job="distill_job", settings={"raw_documents.raw_root": str(dagster_dev.corpus)}
    )
    lines: list[str] = []
    backfill = forge.wait_backfill(backfill_id, timeout=300, progress=lines.append)
    print(f"backfill finished in {time.monotonic() - started:.1f} s:\n" + "\n".join(lines))
    failed = [
        line
        for _, (run_id, status) in backfill.runs.items()
        if status != "SUCCESS"
        for line in forge.logs(run_id)
        if line.error
    ]
    assert backfill.ok, f"{backfill.progress()}\n{failed}\n{dagster_dev.log.read_text()[-3000:]}"
    assert set(backfill.runs) == set(DOMAINS)
    assert len(lines) >= 2 and lines[0] != lines[-1]  # progress was reported as it moved

    on_disk = dict(pl.read_delta(str(dagster_dev.delta / "nexa" / "sft_dataset")).group_by("domain").len().iter_rows())
    sft_sets = {m.domain: m for m in forge.latest("sft_dataset")}
    assert set(sft_sets) == set(DOMAINS)
    for domain, (run_id, _) in backfill.runs.items():
        run = forge.status(run_id)
        assert (run.ok, run.job, run.domain) == (True, "distill_job", domain)
        assert len(run.steps) == run.steps_total and set(run.steps.values()) == {"SUCCESS"}
        sft = sft_sets[domain]
        assert sft.run_id == run_id
        assert sft.metadata["dagster/row_count"] == on_disk[domain] > 0
        assert sft.metadata["dagster/uri"] == str(dagster_dev.delta / "nexa" / "sft_dataset")
        assert forge.materializations("sft_dataset", domain) == [sft]

    events = forge.logs(backfill.runs["physics"][0])
    assert ("sft_dataset", "STEP_SUCCESS") in {(line.step, line.event) for line in events}
    assert events[-1].timestamp >= events[0].timestamp and "RUN_SUCCESS" in {line.event for line in events}

    # distill_job trains nothing: no checkpoint, no release, and the CLI says so
    assert forge.checkpoints() == [] and forge.releases() == []
    capsys.readouterr()
    assert nexa(["releases", "--url", dagster_dev.url]) == 0
    assert nexa(["--url", dagster_dev.url, "logs", backfill.runs["chemistry"][0]]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no release yet") and "RUN_SUCCESS" in out


def test_the_leaderboard_is_read_back(dagster_dev, capsys):
    forge = dagster_dev.forge
    run = forge.wait(dagster_dev.leaderboard_run, timeout=180)
    assert run.ok, [line.error for line in forge.logs(run.run_id) if line.error]
    rows = forge.leaderboard()
    capsys.readouterr()
    assert [(r["rank"], r["domain"], r["checkpoint"], r["metric"], r["score"], r["base"], r["lift"]) for r in rows] == [
        ("1", "physics", "ckpt-physics", "token_f1", "0.400 ± 0.100", "0.100", "+0.300"),
        ("2", "chemistry", "ckpt-chemist", "token_f1", "0.200 ± 0.100", "0.150", "+0.050"),
    ]
    assert nexa(["--url", dagster_dev.url, "leaderboard"]) == 0
    assert "0.400 ± 0.100" in capsys.readouterr().out


def test_run_config_follows_the_job_s_settings(dagster_dev):
    """Named knobs and ASSET.KEY settings become the run config the stages read: a config field where the
    asset has one, else a key of its YAML overrides, checked against the job the webserver serves."""
    forge = dagster_dev.forge
    forge.add_domain("physics")
    whole_graph = forge.job("nexa_job")
    settings = {"teacher_inputs.max_pairs_per_passage": 8, "raw_documents.raw_root": "/r"}
    assert forge.run_config(whole_graph, settings=settings, epochs=1, student_base="/models/qwen2-0.5b") == {
        "ops": {
            "teacher_inputs": {"config": {"max_pairs_per_passage": 8}},
            "raw_documents": {"config": {"raw_root": "/r"}},
            "student_checkpoint": {"config": {"num_train_epochs": 1}},
            "student_base": {"config": {"base_model": "/models/qwen2-0.5b"}},
        }
    }
    teacher = openai_teacher("http://gpu-node:8000/v1", "qwen2-72b", api_key_env="VLLM_KEY")
    assert forge.run_config(whole_graph, teacher=teacher)["resources"]["teacher"]["config"] == {
        "backend": "openai",
        "base_url": "http://gpu-node:8000/v1",
        "model": "qwen2-72b",
        "api_key": {"env": "VLLM_KEY"},
    }
    with pytest.raises(NexaForgeError, match="replaces the code location's teacher whole"):
        forge.run_config(whole_graph, teacher={"model": "gpt-4o"})  # would be the heuristic teacher under that name
    with pytest.raises(NexaForgeError, match="raw_documents has no setting 'root'; did you mean raw_root"):
        forge.run_config(whole_graph, settings={"raw_documents.root": "/r"})
    with pytest.raises(NexaForgeError, match="no asset 'student_checkpoint' in distill_job"):
        forge.run("physics", job="distill_job", epochs=1)
    with pytest.raises(NexaForgeError, match="no job 'nexa_jobs' at .*; jobs: .*nexa_job"):
        forge.run("physics", job="nexa_jobs")


def test_an_unknown_domain_is_a_clear_error(dagster_dev, capsys):
    forge = dagster_dev.forge
    forge.add_domain("physics")  # known, so the backfill below fails on astronomy alone
    with pytest.raises(UnknownDomain, match=r"no domain 'astronomy' at .*; domains: .*physics.*nexa domains add"):
        forge.run("astronomy", job="distill_job")
    with pytest.raises(UnknownDomain, match="no domain 'astronomy'"):
        forge.backfill(["physics", "astronomy"], job="distill_job")
    assert nexa(["--url", dagster_dev.url, "distill", "astronomy"]) == 2
    assert "nexa: no domain 'astronomy'" in capsys.readouterr().err


def test_a_distilled_student_is_promoted_and_listed_from_the_sdk_and_the_cli(dagster_dev, capsys):
    """`nexa distilled promote` (forge.promote_distilled) launches distilled_release_job: the student passes its
    gate (with a setting of it given on the command line), is merged and registered as nexa-physics-distilled by
    the merge stage, and forge.distilled_releases() and `nexa distilled list` list it; the champion's line is
    untouched."""
    import mlflow

    forge, url = dagster_dev.forge, dagster_dev.url
    forge.add_domain("physics")
    assert forge.distilled_releases() == []
    capsys.readouterr()
    assert nexa(["--url", url, "distilled", "list"]) == 0
    assert capsys.readouterr().out.startswith("no distilled release yet (nexa run DOMAIN --job kd_job")
    distilled_id = seed_distilled_student(dagster_dev.root)
    mlflow.set_tracking_uri(f"sqlite:///{dagster_dev.root / 'mlflow.db'}")  # the release's artifacts under root
    mlflow.create_experiment("nexa-students", artifact_location=(dagster_dev.root / "mlruns").as_uri())

    capsys.readouterr()  # `nexa distilled promote` is forge.promote_distilled, then forge.wait
    promoted = nexa(["distilled", "promote", "physics", "--url", url, "--set", "distilled_release.min_kept=0.95"])
    run_id = capsys.readouterr().out.splitlines()[0]
    run = forge.wait(run_id, timeout=300)
    assert promoted == 0 and run.ok, [line.error for line in forge.logs(run_id) if line.error]
    assert (run.job, run.domain) == ("distilled_release_job", "physics")
    [release] = forge.distilled_releases()
    on_disk = pl.read_delta(str(dagster_dev.delta / "nexa" / "distilled_release")).row(0, named=True)
    assert (release.domain, release.run_id, release.metadata["checkpoint_id"]) == ("physics", run_id, distilled_id)
    assert "keeps 0.960 of its teacher's" in on_disk["gate"] and "the 0.950 asked" in on_disk["gate"]
    assert release.metadata["registered_model"] == on_disk["registered_model"] == "nexa-physics-distilled"
    assert release.metadata["model_version"] == on_disk["model_version"] == 1
    assert release.metadata["served_model"] == on_disk["served_model"] == "nexa-physics-distilled-v1"
    assert release.metadata["mlflow_model_uri"] == "models:/nexa-physics-distilled@champion"
    assert forge.releases() == []  # the domain's champion line is another registered model
    client = mlflow.MlflowClient()
    assert int(client.get_model_version_by_alias("nexa-physics-distilled", "champion").version) == 1

    capsys.readouterr()
    assert nexa(["--url", url, "distilled", "list"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("physics") and "served_model=nexa-physics-distilled-v1" in listed
    with pytest.raises(UnknownDomain, match="no domain 'astronomy'"):
        forge.promote_distilled("astronomy")
