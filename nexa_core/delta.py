"""Tables under a Delta root that are not asset outputs (the teacher ledger), read and appended
without Dagster: the `DeltaStore` resource (resources/delta.py) configures one of these."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
from deltalake import DeltaTable, write_deltalake

SCHEMA = "nexa"  # tables live at <root>/nexa/<asset name>


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
        write_deltalake(self.uri(table), frame.to_arrow(), mode="append", schema_mode="merge",
                        storage_options=self._options)
        return self.version(table)
