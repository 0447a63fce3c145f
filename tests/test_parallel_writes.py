"""Parallel runs of different partitions on a fresh Delta root, local and on S3 (moto's server): every
table ends up holding exactly each partition's rows, three times over. Runs of one domain each, at
once, as a backfill launches them; the first writes create the tables."""

import shutil
import threading
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import SAMPLE_RAW
from dagster_deltalake import LocalConfig
from graph_helpers import DISTILL_ASSETS
from test_s3_root import s3_endpoint  # noqa: F401  (fixture)

from nexa_assets.partitions import domain_partitions
from nexa_core.delta import DeltaRoot, write_partition
from resources.delta import DeltaStore, NexaDeltaIOManager
from resources.reports import RawFolder
from resources.teacher import TeacherResource

DOMAINS = [f"field{i}" for i in range(8)]
TABLES = [
    "raw_documents",
    "raw_quarantine",
    "teacher_inputs",
    "teacher_outputs",
    "filtered_pairs",
    "sft_dataset",
    "restatements",
]


@pytest.fixture(scope="module")
def eight_domains(tmp_path_factory) -> Path:
    """Eight domain folders holding the physics sample (ids hash the domain in, so no two collide)."""
    root = tmp_path_factory.mktemp("raw")
    for domain in DOMAINS:
        shutil.copytree(SAMPLE_RAW / "physics", root / domain)
    return root


def materialize_all_at_once(raw_root: Path, resources: dict) -> list[bool]:
    start, results = threading.Barrier(len(DOMAINS)), {}

    def run(domain: str) -> None:
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions(domain_partitions.name, [domain])
            start.wait()
            results[domain] = dg.materialize(
                DISTILL_ASSETS,
                partition_key=domain,
                instance=instance,
                resources=resources,
                raise_on_error=False,
                run_config={"ops": {"raw_documents": {"config": {"raw_root": str(raw_root)}}}},
            ).success

    threads = [threading.Thread(target=run, args=(d,)) for d in DOMAINS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return [results.get(d, False) for d in DOMAINS]


def rows_per_domain(store: DeltaRoot, table: str) -> dict[str, int]:
    return dict(store.scan(table).group_by("domain").len().collect().iter_rows())


def check_every_partition_landed(store: DeltaRoot) -> None:
    for table in TABLES:
        counts = rows_per_domain(store, table)
        assert set(counts) == set(DOMAINS) or (table == "raw_quarantine" and not any(counts.values())), (table, counts)
        assert len(set(counts.values())) <= 1, (table, counts)  # the same corpus: the same rows in each
    cache = store.scan("teacher_cache").collect()
    inputs = store.scan("teacher_inputs").collect()
    asked = inputs.height + inputs["passage_id"].n_unique()  # the pair requests, and one restatement request a passage
    assert cache["request_hash"].n_unique() == cache.height == asked  # each response committed once


@pytest.mark.slow
def test_eight_partitions_at_once_on_a_fresh_local_root_three_times(tmp_path, eight_domains):
    for attempt in range(3):
        root = tmp_path / f"delta{attempt}"
        resources = {
            "io_manager": NexaDeltaIOManager(root_uri=str(root), storage_options=LocalConfig(), schema="nexa"),
            "delta": DeltaStore(root_uri=str(root)),
            "teacher": TeacherResource(),
            "raw": RawFolder(),
        }
        assert materialize_all_at_once(eight_domains, resources) == [True] * len(DOMAINS), f"attempt {attempt}"
        check_every_partition_landed(DeltaRoot(str(root)))


@pytest.mark.heavy  # the same writes as the local root test, on moto S3: the local one is in the default run
@pytest.mark.slow
def test_eight_partitions_at_once_on_a_fresh_s3_root_three_times(eight_domains, s3_endpoint, monkeypatch):  # noqa: F811
    from resources.environment import Environment

    for attempt in range(3):
        monkeypatch.setenv("NEXA_DELTA_ROOT", f"s3://nexa/parallel{attempt}")
        env = Environment.read()
        root, storage, options = env.delta_root, env.delta_storage, env.storage_options
        assert "AWS_S3_ALLOW_UNSAFE_RENAME" not in options  # commits are conditional puts, never unsafe renames
        resources = {
            "io_manager": NexaDeltaIOManager(root_uri=root, storage_options=storage, schema="nexa"),
            "delta": DeltaStore(root_uri=root, storage_options=options),
            "teacher": TeacherResource(),
            "raw": RawFolder(),
        }
        assert materialize_all_at_once(eight_domains, resources) == [True] * len(DOMAINS), f"attempt {attempt}"
        check_every_partition_landed(DeltaRoot(root, options))


def test_writers_racing_to_create_a_table_all_land(tmp_path):
    """The bare race, many times: without creating the table first, most of these writers failed
    (a concurrent transaction deleted data...) and the survivor's unconditioned overwrite stood alone."""
    for attempt in range(10):
        uri = str(tmp_path / f"t{attempt}")
        start, errors = threading.Barrier(8), []

        def write(domain: str) -> None:
            start.wait()
            try:
                write_partition(
                    uri, pl.DataFrame({"domain": [domain] * 3, "x": [1, 2, 3]}), {"domain": [domain]}, None, "t"
                )
            except Exception as exc:  # noqa: BLE001 - the assertion below shows what went wrong
                errors.append(repr(exc))

        threads = [threading.Thread(target=write, args=(f"d{i}",)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert pl.read_delta(uri).group_by("domain").len()["len"].to_list() == [3] * 8
