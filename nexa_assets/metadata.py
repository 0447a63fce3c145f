"""Metadata shared by the assets: what each materialization read, and what an earlier one recorded."""

import dagster as dg

from resources.delta import DeltaStore


def versions_read(store: DeltaStore, *tables: str) -> dict[str, int | None]:
    """Delta version of each input table, recorded so a run can be replayed with time travel."""
    return {f"input_version/{t}": store.version(t) for t in tables}


def recorded_where(
    instance: dg.DagsterInstance, asset: str, partition: str, key: str, value, search: int = 200
) -> dict | None:
    """The metadata (plain values) of the newest materialization of `asset` for `partition` that
    recorded `key` = `value` (e.g. the delta_version it wrote), among its latest `search` ones; None
    when this instance has no record of it."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=search
    ).records
    for record in records:
        metadata = record.asset_materialization.metadata
        if key in metadata and metadata[key].value == value:
            return {k: v.value for k, v in metadata.items()}
    return None


# raw_documents records its folder's fingerprint under this key; the raw folder sensor compares it
# with the folder's now, so a domain already read is not re-run after a restart.
RAW_FINGERPRINT = "raw_fingerprint"
