"""Where a release came from: every (table, Delta version) read on the way to it, a record found again by
time travel, what the teacher's answers cost, and the code version."""

from __future__ import annotations

import subprocess
from pathlib import Path

import polars as pl

from nexa_core.delta import DeltaRoot


def trace_lineage(recorded, start: list[tuple[str, int]]) -> list[dict]:
    """Every (table, Delta version) read on the way to `start`, walked back through what each
    materialization recorded it read (`recorded(table, version)` -> its metadata, or None when unknown,
    e.g. a table that is not an asset). One row per table version: what it read and what else it noted."""
    seen, rows, queue = set(), [], list(start)
    while queue:
        table, version = queue.pop(0)
        if (table, version) in seen or version is None:
            continue
        seen.add((table, version))
        metadata = recorded(table, version) or {}
        reads = {k.removeprefix("input_version/"): v for k, v in metadata.items() if k.startswith("input_version/")}
        notes = {
            k: metadata[k]
            for k in (
                "template",
                "template_sha256",
                "round",
                "feedback_set_version",
                "model",
                "backend",
                "total_cost_usd",
            )
            if k in metadata
        }
        rows.append({"table": table, "version": version, "reads": reads, **notes, "recorded": bool(metadata)})
        queue += [(t, v) for t, v in reads.items() if v is not None]
    return rows


def find_record(tables: DeltaRoot, table: str, column: str, value: str) -> dict | None:
    """The row of `table` whose `column` is `value`, from the newest Delta version that has it: an
    asset's partition holds only its latest record, so earlier ones are found by time travel."""
    latest = tables.version(table)
    for version in range(latest, -1, -1) if latest is not None else ():
        rows = tables.scan(table, version).filter(pl.col(column) == value).collect()
        if rows.height:
            return rows.row(0, named=True)
    return None


def lineage_version(lineage: list[dict], table: str) -> int | None:
    """The version of `table` the release's data was built from (the newest, if several were read)."""
    versions = [row["version"] for row in lineage if row["table"] == table]
    return max(versions) if versions else None


def teacher_cost(tables: DeltaRoot, domain: str, version: int | None) -> float | None:
    """Teacher dollars behind the data: cost_usd of the domain's teacher outputs at the version read."""
    if version is None:
        return None
    return float(
        tables.scan("teacher_outputs", version)
        .filter(pl.col("domain") == domain)
        .select(pl.col("cost_usd").sum())
        .collect()
        .item()
        or 0.0
    )


def code_version(project_root: Path) -> str:
    """The git commit of the project (with -dirty when files differ from it), or 'unknown'."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(project_root), *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
