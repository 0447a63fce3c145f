"""The teacher's ledger in Delta, over a plain store (no Dagster resource needed to use it)."""

from __future__ import annotations

import polars as pl

from nexa_core import schemas
from nexa_core.delta import DeltaRoot
from nexa_core.tables import TEACHER_BATCHES, TEACHER_CACHE, TEACHER_DISPATCH


class TeacherLedger:
    """The Delta tables behind collection, over a store with scan/append/exists (nexa_core.delta
    DeltaRoot; the DeltaStore resource hands one out with `tables()`): `teacher_cache` (one row per
    paid response), `teacher_dispatch` (which requests were sent, committed before they are sent) and
    `teacher_batches` (Batch API submissions)."""

    CACHE, DISPATCH, BATCHES = TEACHER_CACHE, TEACHER_DISPATCH, TEACHER_BATCHES

    def __init__(self, store: DeltaRoot, domain: str):
        self.store, self.domain = store, domain

    def _read(self, table: str, schema: dict, where: pl.Expr) -> pl.DataFrame:
        if not self.store.exists(table):
            return schemas.empty(schema)
        return self.store.scan(table).filter(where).collect()

    def cached(self, hashes: list[str]) -> pl.DataFrame:
        rows = self._read(self.CACHE, schemas.TEACHER_CACHE, pl.col("request_hash").is_in(hashes))
        return schemas.conform(rows, schemas.TEACHER_CACHE).unique("request_hash", keep="first")

    def commit(self, rows: pl.DataFrame) -> None:
        self.store.append(self.CACHE, schemas.conform(rows, schemas.TEACHER_CACHE))

    def dispatched(self, hashes: list[str]) -> pl.DataFrame:
        return self._read(
            self.DISPATCH,
            schemas.TEACHER_DISPATCH,
            (pl.col("domain") == self.domain) & pl.col("request_hash").is_in(hashes),
        )

    def record_dispatch(self, rows: pl.DataFrame) -> None:
        self.store.append(self.DISPATCH, schemas.conform(rows, schemas.TEACHER_DISPATCH))

    def batches(self) -> pl.DataFrame:
        """The latest state of each batch this domain submitted."""
        rows = self._read(self.BATCHES, schemas.TEACHER_BATCHES, pl.col("domain") == self.domain)
        return rows.sort("recorded_at").unique("batch_id", keep="last", maintain_order=True)

    def record_batch(self, rows: pl.DataFrame) -> None:
        self.store.append(self.BATCHES, schemas.conform(rows, schemas.TEACHER_BATCHES))
