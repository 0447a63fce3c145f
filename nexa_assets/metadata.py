"""Metadata shared by the assets: what each materialization read."""

from resources.delta import DeltaStore


def versions_read(store: DeltaStore, *tables: str) -> dict[str, int | None]:
    """Delta version of each input table, recorded so a run can be replayed with time travel."""
    return {f"input_version/{t}": store.version(t) for t in tables}
