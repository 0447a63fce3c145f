"""An s3:// Delta root against a real local S3 (moto's server on 127.0.0.1, stopped by its PID)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from graph_helpers import DISTILL_ASSETS

from nexa_assets import checks
from nexa_assets.partitions import domain_partitions
from resources.delta import DeltaStore, NexaDeltaIOManager
from resources.environment import Environment
from resources.reports import RawFolder
from resources.teacher import TeacherResource


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint(monkeypatch):
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    port = free_port()
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    deadline = time.time() + 30
    while True:
        try:
            boto3.client("s3", endpoint_url=url).create_bucket(Bucket="nexa")
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.3)
    yield url
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # moto's server can inherit SIGTERM as ignored
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_graph_on_an_s3_root(instance, raw_root, s3_endpoint, monkeypatch):
    monkeypatch.setenv("NEXA_DELTA_ROOT", "s3://nexa/delta")
    env = Environment.read()
    root, storage, options = env.delta_root, env.delta_storage, env.storage_options
    assert (
        root == "s3://nexa/delta" and options["AWS_ENDPOINT_URL"] == s3_endpoint and options["AWS_ALLOW_HTTP"] == "true"
    )
    instance.add_dynamic_partitions(domain_partitions.name, ["physics", "biology"])
    resources = {
        "io_manager": NexaDeltaIOManager(root_uri=root, storage_options=storage, schema="nexa"),
        "delta": DeltaStore(root_uri=root, storage_options=options),
        "teacher": TeacherResource(),
        "raw": RawFolder(),
    }
    for domain in ("physics", "biology"):
        result = dg.materialize(
            [*DISTILL_ASSETS, *checks.quality_checks],
            partition_key=domain,
            instance=instance,
            resources=resources,
            run_config={"ops": {"raw_documents": {"config": {"raw_root": str(raw_root)}}}},
        )
        assert result.success
    store = resources["delta"]
    sft = store.scan("sft_dataset").collect()
    assert set(sft["domain"]) == {"physics", "biology"} and sft.height > 100
    assert store.version("teacher_cache") is not None
