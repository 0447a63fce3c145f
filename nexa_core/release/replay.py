"""Replaying a release: rebuild it from its record. The SFT rows by Delta time travel at the version it was trained
on, the documents its student read at theirs, the typed settings of the reading and of SFT (and of its answers and
suites) as its records stored them, and the same base; nexa_assets/replay.py trains and evaluates that as one run,
and the replayed scores stand beside the recorded ones. A recorded input that is gone (a vacuumed version, a base
no longer there, settings recorded before they were typed) is named, never guessed; the code version is compared,
not checked out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from nexa_core.delta import DeltaRoot
from nexa_core.evaluate.leaderboard import lift_rows
from nexa_core.recipe import BenchmarkConfig, FinetuneConfig, GenerateConfig, ReadingConfig
from nexa_core.release.gate import ReleaseError
from nexa_core.release.provenance import find_record
from nexa_core.release.records import release_record
from nexa_core.tables import (
    BENCHMARK_HISTORY,
    BENCHMARK_SCORES,
    CHECKPOINT_HISTORY,
    EVAL_HISTORY,
    EVAL_PREDICTIONS,
    RAW_DOCUMENTS,
    SFT_DATASET,
    STUDENT_BASE,
)


@dataclass
class ReplayPlan:
    domain: str
    version: int
    release: dict
    settings: dict[str, object] = field(default_factory=dict)  # {ASSET.KEY: value} of the replay's one run
    recorded: list[dict] = field(default_factory=list)  # the release's lift-table rows (student, read, base)
    code_then: str = ""
    code_now: str = ""

    @property
    def label(self) -> str:
        return f"{self.domain}-v{self.version}"

    def code_note(self) -> str:
        if self.code_then == self.code_now:
            return f"the code is the release's ({self.code_now})"
        return f"the code differs: the release was made by {self.code_then}, this is {self.code_now}"


def readable(tables: DeltaRoot, table: str, version: int | None, domain: str) -> str | None:
    """None when `table` can be read at `version` for the domain, else why not (what a user can act on)."""
    if version is None:
        return f"{table}: the record names no version"
    try:
        rows = tables.scan(table, version).filter(pl.col("domain") == domain).select(pl.len()).collect().item()
    except Exception as exc:  # deltalake names a vacuumed or missing version in its own words
        return f"{table} v{version} cannot be read any more (vacuumed or removed: {type(exc).__name__}: {exc})"
    return None if rows else f"{table} v{version} has no rows of {domain}"


def base_gone(base_model: str, bases_dir: Path | None) -> str | None:
    """None when the base the student started from can still be had, else why not."""
    from nexa_core.models.bases import DEFAULT_STUDENT, EMBEDDED_BASES

    if base_model == DEFAULT_STUDENT:
        return None  # built from the corpus again
    if base_model in EMBEDDED_BASES:
        import importlib.util

        package = EMBEDDED_BASES[base_model].package
        return (
            None
            if importlib.util.find_spec(package.replace("-", "_"))
            else f"base {base_model}: {package} is not installed"
        )
    if Path(base_model).is_dir():
        return None
    return f"base {base_model}: no such folder (a hub id cannot be checked offline)"


def stage_values(config, recorded: dict | None, asset: str) -> dict:
    """{ASSET.KEY: value} of a stage's recorded settings that differ from today's defaults (the keys it knows)."""
    if not recorded:
        return {}
    known = {k: v for k, v in recorded.items() if k in config.__dataclass_fields__}
    typed = config.parse({**config.defaults().to_dict(), **known})
    return {f"{asset}.{k}": v for k, v in typed.changes().items()}


def plan_replay(
    tables: DeltaRoot, domain: str, version: int, registered_model: str, code_now: str, bases_dir: Path | None = None
) -> ReplayPlan:
    """What replaying release `version` of `domain` takes, every recorded input checked; a ReleaseError naming each
    input that is gone."""
    release = release_record(tables, domain, version, registered_model)
    checkpoint = find_record(tables, CHECKPOINT_HISTORY, "checkpoint_id", release["checkpoint_id"])
    if checkpoint is None:
        raise ReleaseError(
            f"{domain} v{version}: its checkpoint {release['checkpoint_id']} is not in {CHECKPOINT_HISTORY}"
        )
    base = find_record(tables, STUDENT_BASE, "base_id", checkpoint["base_id"]) or {}
    gone = [
        readable(tables, SFT_DATASET, checkpoint["sft_version"], domain),
        readable(tables, RAW_DOCUMENTS, base.get("documents_version"), domain) if base.get("trained") else None,
        base_gone(base.get("base_model") or checkpoint["base_model"], bases_dir),
        None
        if checkpoint.get("settings")
        else "student_checkpoint: its SFT settings were not recorded (before typed settings)",
        None
        if base.get("settings")
        else "student_base: its reading settings were not recorded (before typed settings)",
    ]
    gone = [g for g in gone if g]
    if gone:
        raise ReleaseError(f"release {domain} v{version} cannot be replayed:\n- " + "\n- ".join(gone))
    answers = (
        find_record(tables, EVAL_PREDICTIONS, "checkpoint_id", checkpoint["checkpoint_id"])
        if tables.exists(EVAL_PREDICTIONS)
        else None
    )
    suites = (
        find_record(tables, BENCHMARK_SCORES, "checkpoint_id", checkpoint["checkpoint_id"])
        if tables.exists(BENCHMARK_SCORES)
        else None
    )
    sft = json.loads(checkpoint["settings"])
    settings = {
        **stage_values(ReadingConfig, json.loads(base["settings"]), "student_base"),
        **stage_values(FinetuneConfig, {k: v for k, v in sft.items() if k != "base_model"}, "student_checkpoint"),
        **stage_values(
            GenerateConfig, json.loads(answers["generation_config"]) if answers else None, "eval_predictions"
        ),
        **stage_values(BenchmarkConfig, json.loads(suites["benchmark_config"]) if suites else None, "benchmark_scores"),
        "student_base.documents_version": base.get("documents_version"),
        "student_checkpoint.sft_version": checkpoint["sft_version"],
        "student_base.restatements_version": base.get("restatements_version"),
        "student_checkpoint.restatements_version": checkpoint.get("restatements_version"),
        "student_base.replay_of": f"{domain}-v{version}",
        "student_checkpoint.replay_of": f"{domain}-v{version}",
    }
    history = tables.scan(EVAL_HISTORY).filter(pl.col("domain") == domain).collect()
    benchmarks = (
        tables.scan(BENCHMARK_HISTORY).filter(pl.col("domain") == domain).collect()
        if tables.exists(BENCHMARK_HISTORY)
        else None
    )
    return ReplayPlan(
        domain=domain,
        version=version,
        release=release,
        settings={k: v for k, v in settings.items() if v is not None},
        recorded=[
            {
                "measure": row["measure"],
                "n": row["n"],
                **{
                    role: {k: row[role][k] for k in ("mean", "ci_low", "ci_high")} if row[role] else None
                    for role in ("student", "read", "base")
                },
            }
            for row in lift_rows(history, benchmarks, [checkpoint["checkpoint_id"]])
        ],
        code_then=release["code_version"],
        code_now=code_now,
    )
