"""Postgres instance storage: a real PostgreSQL started here on 127.0.0.1 and stopped by its PID.
Runs, event logs, sensor state and dynamic partitions land in it, and two processes launching runs at
once do not collide."""

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest
from conftest import PROJECT
from graph_helpers import materialize_domain

from nexa_assets.partitions import domain_partitions
from resources.instance import PG_URL_VARIABLE, write_instance_file

BIN = Path(sys.executable).parent


def postgres_bin() -> Path | None:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "postgres").is_file() and (folder / "initdb").is_file():
            return folder
    found = shutil.which("postgres")
    return Path(found).parent if found and shutil.which("initdb") else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away cluster: initdb, then the postmaster itself as our child, so its PID stops it."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip(
            "PostgreSQL server binaries not found (Debian: apt-get install postgresql); scripts/test.sh "
            "installs them where it can"
        )
    # PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    owner = "postgres" if as_user else getpass.getuser()
    work = Path(tempfile.mkdtemp(prefix="nexa-pg-"))
    work.chmod(0o755)
    data, sockets = work / "data", work / "sockets"
    sockets.mkdir()
    if as_user:
        shutil.chown(work, "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run(
        [
            *as_user,
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            owner,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [
            *as_user,
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(sockets),
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "server.log", "w"),  # a file, not a pipe nobody drains
        text=True,
        start_new_session=True,  # runuser and the postgres under it: one process group, stopped together
    )
    import psycopg2

    try:
        deadline = time.time() + 60
        while True:
            try:
                psycopg2.connect(host="127.0.0.1", port=port, user=owner, dbname="postgres").close()
                break
            except psycopg2.OperationalError:
                assert server.poll() is None, (work / "server.log").read_text()
                assert time.time() < deadline, "PostgreSQL did not accept connections within 60 s"
                time.sleep(0.3)
        admin = psycopg2.connect(host="127.0.0.1", port=port, user=owner, dbname="postgres")
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE dagster")
        admin.close()
        yield f"postgresql://{owner}@127.0.0.1:{port}/dagster"
    finally:
        # SIGINT is PostgreSQL's fast shutdown; to the group, as runuser does not pass it on
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def query(url: str, sql: str, *args) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall()


@pytest.fixture
def pg_home(tmp_path, postgres_url, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv(PG_URL_VARIABLE, postgres_url)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    write_instance_file(home, postgres=True)
    return home


def test_the_instance_file_chooses_postgres_by_one_variable(tmp_path, postgres_url):
    sqlite_file = write_instance_file(tmp_path / "a", postgres=False)
    assert "storage" not in sqlite_file.read_text()  # SQLite under DAGSTER_HOME, as before
    pg_file = write_instance_file(tmp_path / "a", postgres=True)
    text = pg_file.read_text()
    assert PG_URL_VARIABLE in text and postgres_url not in text  # by reference, never the URL itself
    assert "max_concurrent_runs" in text  # the project's run queue and pools come along


def test_runs_event_logs_sensors_and_partitions_land_in_postgres(pg_home, postgres_url, raw_root, delta_root):
    with dg.DagsterInstance.from_config(str(pg_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = materialize_domain(instance, "physics", raw_root, delta_root, selection=["raw_documents"])
        assert result.success
    runs = query(postgres_url, "SELECT run_id, status FROM runs")
    assert (result.run_id, "SUCCESS") in runs
    events = query(postgres_url, "SELECT count(*) FROM event_logs WHERE run_id = %s", result.run_id)[0][0]
    assert events > 5
    assert ("physics",) in query(
        postgres_url, "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s", domain_partitions.name
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(pg_home),
        PG_URL_VARIABLE: postgres_url,
        "NEXA_DELTA_ROOT": str(delta_root),
        "NEXA_RAW_ROOT": str(raw_root),
    }
    stopped = subprocess.run(
        [str(BIN / "dagster"), "sensor", "stop", "raw_folder_sensor", "-m", "nexa_assets.definitions"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    # the sensor runs by default, so stopping it is what stores its state
    with dg.DagsterInstance.from_config(str(pg_home)) as instance:
        states = {state.name: state.status.value for state in instance.all_instigator_state()}
    assert states.get("raw_folder_sensor") == "STOPPED", states
    assert query(postgres_url, "SELECT status FROM instigators") == [("STOPPED",)]


def test_two_processes_launching_runs_at_once_do_not_collide(pg_home, postgres_url, raw_root, delta_root):
    with dg.DagsterInstance.from_config(str(pg_home)) as instance:
        instance.add_dynamic_partitions(domain_partitions.name, ["chemistry", "biology"])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(pg_home),
        PG_URL_VARIABLE: postgres_url,
        "NEXA_DELTA_ROOT": str(delta_root),
        "NEXA_RAW_ROOT": str(raw_root),
    }
    config = '{"ops": {"raw_documents": {"config": {"raw_root": "%s"}}}}' % raw_root
    launches = [
        subprocess.Popen(
            [
                str(BIN / "dagster"),
                "asset",
                "materialize",
                "--select",
                "raw_documents",
                "--partition",
                domain,
                "-m",
                "nexa_assets.definitions",
                "--config-json",
                config,
            ],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for domain in ("chemistry", "biology")
    ]
    errors = [proc.communicate(timeout=400)[1] for proc in launches]
    assert [proc.returncode for proc in launches] == [0, 0], "\n".join(e[-2000:] for e in errors)
    tagged = query(
        postgres_url,
        "SELECT r.status, t.value FROM runs r JOIN run_tags t ON r.run_id = t.run_id WHERE t.key = 'dagster/partition'",
    )
    assert {("SUCCESS", "chemistry"), ("SUCCESS", "biology")} <= set(tagged)
