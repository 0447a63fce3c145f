"""Delta Lake storage: the IO manager that stores every tabular asset, and a small store resource
for the tables that are not asset outputs (the teacher cache) and for readers of many partitions.

The IO manager is dagster-deltalake's `DeltaLakeIOManager` with a polars type handler of ours:
- reads go through polars' native Delta scan. The stock handler reads through
  `DeltaTable.to_pyarrow_dataset()`, and with deltalake 1.6 a pyarrow-dataset read aborts the
  interpreter at exit ("terminate called without an active exception", exit 134) in most runs;
- every write adds the metadata the UI needs: row count, Delta version written, column schema,
  a markdown preview; every read records the Delta version it read;
- a write of a domain partition replaces exactly that partition (predicate overwrite), and refuses
  a frame whose partition column holds another partition's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import polars as pl
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_deltalake import DeltaLakeIOManager
from dagster_deltalake.io_manager import TableConnection
from deltalake import DeltaTable

from nexa_core.delta import DeltaRoot, write_partition

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def table_markdown(frame: pl.DataFrame, rows: int = 5, width: int = 60) -> str:
    """A few rows as a markdown table, long strings cut so the UI stays readable."""
    head = frame.head(rows)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    for row in head.iter_rows():
        lines.append(
            "| "
            + " | ".join("" if v is None else str(v)[:width].replace("|", "\\|").replace("\n", " ") for v in row)
            + " |"
        )
    return "\n".join(lines)


def column_schema(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=n, type=str(t)) for n, t in frame.schema.items()])


def _partition_filter(table_slice: TableSlice) -> pl.Expr | None:
    expr = None
    for dim in table_slice.partition_dimensions or []:
        values = list(dim.partitions)
        part = pl.col(dim.partition_expr).is_in(values)
        expr = part if expr is None else expr & part
    return expr


def table_metadata(frame: pl.DataFrame, uri: str, version: int) -> dict:
    return {
        "dagster/row_count": frame.height,
        "dagster/uri": uri,
        "dagster/column_schema": column_schema(frame),
        "delta_version": version,
        "preview": dg.MetadataValue.md(table_markdown(frame)),
    }


class PolarsDeltaTypeHandler(DbTypeHandler[pl.DataFrame]):
    def handle_output(
        self, context: dg.OutputContext, table_slice: TableSlice, obj: pl.DataFrame, connection: TableConnection
    ) -> None:
        partitions = {d.partition_expr: list(d.partitions) for d in table_slice.partition_dimensions or []}
        version = write_partition(
            connection.table_uri, obj, partitions, connection.storage_options, context.asset_key.to_user_string()
        )
        context.add_output_metadata(table_metadata(obj, connection.table_uri, version))

    def load_input(
        self, context: dg.InputContext, table_slice: TableSlice, connection: TableConnection
    ) -> pl.DataFrame:
        table = DeltaTable(connection.table_uri, storage_options=connection.storage_options)
        version = table.version()
        frame = pl.scan_delta(connection.table_uri, version=version, storage_options=connection.storage_options)
        if (where := _partition_filter(table_slice)) is not None:
            frame = frame.filter(where)
        if table_slice.columns:
            frame = frame.select(table_slice.columns)
        context.add_input_metadata(
            {"delta_version": version, "table_uri": connection.table_uri}, description="Delta version read"
        )
        return frame.collect()

    @property
    def supported_types(self) -> Sequence[type]:
        return [pl.DataFrame]


class NexaDeltaIOManager(DeltaLakeIOManager):
    """Delta Lake IO manager for polars frames; tables under <root_uri>/nexa/."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [PolarsDeltaTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pl.DataFrame


class DeltaStore(dg.ConfigurableResource):
    """The same root as the IO manager, for tables outside the asset outputs (teacher cache) and
    for readers that need the table itself (checks, cross-domain readers, Delta versions). Reads
    and appends go through `tables()`, the plain nexa_core.delta store that core code (the teacher
    ledger) is given."""

    root_uri: str
    storage_options: dict[str, str] = {}

    def tables(self) -> DeltaRoot:
        return DeltaRoot(self.root_uri, dict(self.storage_options))

    def uri(self, table: str) -> str:
        return self.tables().uri(table)

    def exists(self, table: str) -> bool:
        return self.tables().exists(table)

    def version(self, table: str) -> int | None:
        return self.tables().version(table)

    def scan(self, table: str, version: int | None = None) -> pl.LazyFrame:
        return self.tables().scan(table, version)

    def read_partition(self, table: str, domain: str) -> pl.DataFrame:
        return self.scan(table).filter(pl.col("domain") == domain).collect()

    def write_domain(self, table: str, domain: str, frame: pl.DataFrame) -> int:
        """Replace one domain's partition of a table that is not an asset output."""
        return write_partition(self.uri(table), frame, {"domain": [domain]}, self.storage_options or None, table)

    def append(self, table: str, frame: pl.DataFrame) -> int:
        return self.tables().append(table, frame)
