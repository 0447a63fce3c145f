"""Materialize the distillation graph for tests, on explicit roots."""

from pathlib import Path

import dagster as dg
from dagster_deltalake import LocalConfig

from nexa_assets import checks, distill
from nexa_assets.partitions import domain_partitions
from resources.delta import DeltaStore, NexaDeltaIOManager
from resources.reports import RawFolder, ReportFolder
from resources.student import StudentModel
from resources.teacher import TeacherResource

# The config-built student: the tests that do not need the real base (tests/test_real_base.py does) stay fast
TINY = StudentModel(base_model="nexa-tiny-llama")

DISTILL_ASSETS = distill.DISTILL_ASSETS


def resources(delta_root: Path, teacher: TeacherResource | None = None) -> dict:
    return {
        "io_manager": NexaDeltaIOManager(root_uri=str(delta_root), storage_options=LocalConfig(), schema="nexa"),
        "delta": DeltaStore(root_uri=str(delta_root)),
        "teacher": teacher or TeacherResource(),
        "raw": RawFolder(),  # the tests name their raw root in raw_documents' run config
        "student": TINY,
        "reports": ReportFolder(folder=str(delta_root.parent / "reports")),
    }  # beside the tables, not in the project


def materialize_domain(
    instance, domain: str, raw_root: Path, delta_root: Path, teacher=None, selection=None, raise_on_error: bool = True
):
    if not instance.has_dynamic_partition(domain_partitions.name, domain):
        instance.add_dynamic_partitions(domain_partitions.name, [domain])
    return dg.materialize(
        [*DISTILL_ASSETS, *checks.quality_checks],
        partition_key=domain,
        instance=instance,
        resources=resources(delta_root, teacher),
        selection=selection,
        raise_on_error=raise_on_error,
        run_config={"ops": {"raw_documents": {"config": {"raw_root": str(raw_root)}}}},
    )


def read_table(delta_root: Path, table: str):
    """Read back with deltalake (version) and polars' native Delta scan (rows)."""
    import polars as pl
    from deltalake import DeltaTable

    uri = str(delta_root / "nexa" / table)
    version = DeltaTable(uri).version()
    return pl.read_delta(uri, version=version), version
