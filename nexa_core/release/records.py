"""A release's records: what the merge made and registered, the folder committed with its card, its costs, the
release_history row, and the way back from a domain to a release and to the SFT rows it was trained on."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from nexa_core.artifacts import commit_folder
from nexa_core.delta import DeltaRoot
from nexa_core.ids import content_id
from nexa_core.release.card import CARD
from nexa_core.release.gate import GateDecision, ReleaseError
from nexa_core.release.provenance import lineage_version, teacher_cost
from nexa_core.tables import RELEASE_HISTORY, SFT_DATASET

DISTILLED_LINE = "distilled"  # a domain's distilled students are released as <registered model>-distilled


def release_summary(domain: str, merged: dict) -> dict:
    """What the merge stage made and registered, as the card and the release row name it."""
    name, version = merged["registered_model"], merged["model_version"]
    return {
        "domain": domain,
        "registered_model": name,
        "model_version": version,
        "served_model": f"{name}-v{version}",
        "merged_uri": merged["merged_uri"],
        "weights_sha256": merged["files"],
        "released_at": datetime.now(timezone.utc),
    }


def commit_release(merged: dict, out_dir: str | Path, card: str, record: dict) -> dict[str, str]:
    """Write the model card and the manifest (record, and what was merged and registered) into the staging
    folder and rename it into place (the rename is the commit); returns the sha256 of every file, the card
    included."""
    staging = Path(merged["staging"])
    (staging / CARD).write_text(card, encoding="utf-8")
    made = ("merged_from", "base_model_path", "registered_model", "model_version")
    return commit_folder(staging, Path(out_dir), record | {k: merged[k] for k in made if k in merged})


def release_costs(tables: DeltaRoot, domain: str, lineage: list[dict], base: dict, checkpoint: dict) -> dict:
    """What the release cost: the teacher's answers it was distilled from, and the reading and SFT compute."""
    teacher_version = lineage_version(lineage, "teacher_outputs")
    return {
        "teacher_usd": teacher_cost(tables, domain, teacher_version),
        "teacher_outputs_version": teacher_version,
        "gpu_hours": ((base.get("gpu_seconds") or 0.0) + checkpoint["gpu_seconds"]) / 3600,
        "wall_hours": ((base.get("wall_seconds") or 0.0) + checkpoint["wall_seconds"]) / 3600,
    }


def checkpoint_rubrics(scores: pl.DataFrame | None, checkpoint_id: str) -> list[dict]:
    """The judge rubrics (name, sha256) the checkpoint's answers were scored with."""
    if scores is None:
        return []
    judged = scores.filter((pl.col("checkpoint_id") == checkpoint_id) & pl.col("rubric_sha256").is_not_null())
    return judged.select("rubric", "rubric_sha256").unique().sort("rubric").to_dicts()


def release_row(
    summary: dict,
    checkpoint: dict,
    decision: GateDecision,
    files: dict[str, str],
    lineage: list[dict],
    costs: dict,
    code: str,
    card: str,
    run_id: str,
) -> dict:
    """The release_history row (schemas.MODEL_RELEASE) of a committed release."""
    domain, name, version = summary["domain"], summary["registered_model"], summary["model_version"]
    return {
        **{k: summary[k] for k in ("domain", "registered_model", "model_version", "served_model", "merged_uri")},
        "released_at": summary["released_at"],
        "release_id": content_id(domain, name, version, checkpoint["checkpoint_id"]),
        "checkpoint_id": checkpoint["checkpoint_id"],
        **{k: checkpoint[k] for k in ("round", "sft_version", "base_id", "base_model", "finetune")},
        "files_sha256": json.dumps(files, sort_keys=True),
        "metric": decision.metric,
        "score": decision.candidate.mean,
        "ci_low": decision.candidate.ci_low,
        "ci_high": decision.candidate.ci_high,
        "base_score": decision.base.mean,
        "previous_champion": decision.champion_version,
        "gate": json.dumps({**decision.metadata(), "reasons": decision.reasons}),
        "lineage": json.dumps(lineage, default=str),
        "teacher_usd": costs["teacher_usd"],
        "gpu_hours": costs["gpu_hours"],
        "code_version": code,
        "model_card": card,
        "mlflow_run_id": run_id,
    }


# --- reproducibility -----------------------------------------------------------------------------------


def release_record(tables: DeltaRoot, domain: str, version: int, registered_model: str) -> dict:
    """The release_history row of a registered model's version (a domain's own line, or its distilled one)."""
    if not tables.exists(RELEASE_HISTORY):
        raise ReleaseError(
            f"domain {domain}: no release has been made yet (no {RELEASE_HISTORY} table); "
            f"materialize model_release for it"
        )
    line = tables.scan(RELEASE_HISTORY).filter(
        (pl.col("domain") == domain) & (pl.col("registered_model") == registered_model)
    )
    found = line.filter(pl.col("model_version") == version).sort("released_at").collect()
    if found.is_empty():
        known = line.select("model_version").collect()
        raise ReleaseError(
            f"domain {domain}: no release v{version} of {registered_model}; released versions: "
            f"{sorted(known['model_version'].to_list()) or 'none'}"
        )
    return found.row(-1, named=True)


def champion_release(tables: DeltaRoot, domain: str, champion_version: int | None, registered_model: str) -> dict:
    """The release record of the registered model's champion; an unknown domain, or one without a champion,
    is an error that says so and what to do."""
    if champion_version is None:
        known = (
            sorted(tables.scan("raw_documents").select("domain").unique().collect()["domain"])
            if tables.exists("raw_documents")
            else []
        )
        if domain not in known:
            raise ReleaseError(
                f"unknown domain {domain!r}: the domains with data are {known or 'none'} "
                f"(a folder under the raw root, materialized)"
            )
        asset = "distilled_release" if registered_model.endswith(f"-{DISTILLED_LINE}") else "model_release"
        raise ReleaseError(
            f"domain {domain} has no champion of {registered_model}: no release has passed the promotion gate; "
            f"materialize {asset} for partition {domain} (its gate check says why a candidate was refused)"
        )
    return release_record(tables, domain, champion_version, registered_model)


def trained_rows(tables: DeltaRoot, release: dict, split: str = "train") -> pl.DataFrame:
    """The SFT rows a release was trained on: its sft_dataset version (Delta time travel), its domain."""
    return (
        tables.scan(SFT_DATASET, release["sft_version"])
        .filter((pl.col("domain") == release["domain"]) & (pl.col("split") == split))
        .sort("example_id")
        .collect()
    )
