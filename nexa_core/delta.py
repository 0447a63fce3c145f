"""Delta tables without Dagster: partition overwrites that every IO-manager write goes through, and a
store over a root for the tables that are not asset outputs (the teacher ledger); the `DeltaStore`
resource (resources/delta.py) configures one of these.

Parallel runs of different partitions are the normal case, so every write survives them:
- a table is created on its own, empty, before any data is written to it. Two writers that create it at
  once both try to commit version 0; the loser finds the table there and goes on. (Without this, the
  first data write of each run is an unconditioned overwrite, and all but one of the runs that start
  on a fresh root fail, the winner's overwrite alone surviving.)
- data commits conflict only where they touch the same partition: delta-rs's conflict checker
  retries a commit whose concurrent winners touched other partitions (a predicate overwrite reads only
  its own partition) and refuses one that overlaps, which is raised with the partition named; it is
  never retried blindly.
- on S3 the commit is a conditional put (If-None-Match), not an unsafe rename."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

SCHEMA = "nexa"  # tables live at <root>/nexa/<asset name>
# Commits a writer may rebase over concurrent commits to other partitions (delta-rs's default is 15;
# a backfill of many domains puts more writers on one table at once).
COMMIT = CommitProperties(max_commit_retries=64)


class ConcurrentWriteError(RuntimeError):
    """Another writer changed the same partition of the same table at the same time."""


def create_if_missing(
    uri: str, frame: pl.DataFrame, partition_by: list[str] | None, storage_options: dict | None
) -> bool:
    """Create the table (empty, with the frame's schema) unless it exists; True if this call created it."""
    if DeltaTable.is_deltatable(uri, storage_options=storage_options):
        return False
    try:
        # No rebase for a create: a losing creator retried at version 1 would commit a second metaData
        # action, and every writer that read version 0 would then fail with "Metadata changed".
        DeltaTable.create(
            uri,
            schema=frame.head(0).to_arrow().schema,
            partition_by=partition_by or None,
            mode="ignore",
            storage_options=storage_options,
            commit_properties=CommitProperties(max_commit_retries=0),
        )
        return True
    except (CommitFailedError, DeltaError):
        if DeltaTable.is_deltatable(uri, storage_options=storage_options):
            return False  # another writer created it first: its version 0 is ours too
        raise


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def write_partition(
    uri: str, frame: pl.DataFrame, partitions: dict[str, list[str]], storage_options: dict | None, label: str
) -> int:
    """Replace exactly the given partitions of a Delta table with `frame`; return the new version.

    The partition column is cast to string (a non-string partition column is how an overwrite can
    match nothing and rewrite the whole table), and rows of any other partition are refused."""
    clauses = []
    for column, values in partitions.items():
        if column not in frame.columns:
            raise ValueError(f"{label}: frame lacks partition column '{column}'")
        frame = frame.with_columns(pl.col(column).cast(pl.String))
        stray = frame.filter(~pl.col(column).is_in(values))[column].unique().to_list()
        if stray:
            raise ValueError(
                f"{label} partition {values}: frame holds rows of other partitions {stray[:5]}; refusing to write them"
            )
        clauses.append(f"{column} IN ({', '.join(_sql_literal(v) for v in values)})")
    create_if_missing(uri, frame, list(partitions), storage_options)
    try:
        # schema_mode="merge": a table written before a column was added takes the new column (nulls in old rows)
        write_deltalake(
            uri,
            frame.to_arrow(),
            mode="overwrite",
            partition_by=list(partitions) or None,
            predicate=" AND ".join(clauses) or None,
            schema_mode="merge",
            storage_options=storage_options,
            commit_properties=COMMIT,
        )
    except CommitFailedError as exc:
        raise ConcurrentWriteError(
            f"{label} partition {partitions}: another run wrote the same partition at the same "
            f"time, and this write was not committed ({exc}); re-run it"
        ) from exc
    return DeltaTable(uri, storage_options=storage_options).version()


@dataclass(frozen=True)
class DeltaRoot:
    root_uri: str
    storage_options: dict[str, str] = field(default_factory=dict)

    @property
    def _options(self) -> dict[str, str] | None:
        return self.storage_options or None

    def uri(self, table: str) -> str:
        return f"{self.root_uri.rstrip('/')}/{SCHEMA}/{table}"

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(table), storage_options=self._options)

    def version(self, table: str) -> int | None:
        if not self.exists(table):
            return None
        return DeltaTable(self.uri(table), storage_options=self._options).version()

    def scan(self, table: str, version: int | None = None) -> pl.LazyFrame:
        return pl.scan_delta(self.uri(table), version=version, storage_options=self._options)

    def append(self, table: str, frame: pl.DataFrame) -> int:
        """Appends never conflict with each other; only the table's creation needs care."""
        create_if_missing(self.uri(table), frame, None, self._options)
        write_deltalake(
            self.uri(table),
            frame.to_arrow(),
            mode="append",
            schema_mode="merge",
            storage_options=self._options,
            commit_properties=COMMIT,
        )
        return self.version(table)
