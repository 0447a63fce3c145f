"""The side tables of nexa_core.tables as asset specs beside the asset that writes them, and the one way to
write one: the rows go to Delta and a materialization of the table's own asset is recorded, so the UI's
lineage, partitions and metadata show the histories like any asset."""

from datetime import datetime, timezone

import dagster as dg
import polars as pl

from nexa_assets.partitions import domain_partitions
from nexa_core import schemas
from nexa_core.tables import SIDE_TABLES
from resources.delta import DeltaStore, table_metadata


def side_table_spec(name: str, group: str) -> dg.AssetSpec:
    table = SIDE_TABLES[name]
    return dg.AssetSpec(
        name,
        partitions_def=domain_partitions,
        group_name=group,
        # no edge from the writer: the spec is not executable, and `--select WRITER+` must stay materializable
        kinds={"delta"},
        description=f"{table.description} Written by {table.written_by}, in its step.",
    )


def append_side_table(delta: DeltaStore, name: str, domain: str, rows: pl.DataFrame) -> dg.AssetMaterialization:
    """Append the rows (every row ever made stays); the materialization to record, which the writer logs
    after its own output (so its own materialization stays the step's first)."""
    version = delta.append(name, rows)
    return dg.AssetMaterialization(
        asset_key=name, partition=domain, metadata=table_metadata(rows, delta.uri(name), version)
    )


def append_summary(delta: DeltaStore, name: str, domain: str, summary: pl.DataFrame) -> dg.AssetMaterialization:
    """A history of aggregates (eval_history, benchmark_history): the summary stamped with its time, in the
    table's schema."""
    rows = schemas.conform(
        summary.with_columns(created_at=pl.lit(datetime.now(timezone.utc))), SIDE_TABLES[name].schema
    )
    return append_side_table(delta, name, domain, rows)
