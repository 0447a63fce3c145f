"""A checkpoint folder: the model and adapter it holds, the models it is scored beside (its roles, from the
manifests this project writes), and its files checked against the record that names them."""

from __future__ import annotations

import json
from pathlib import Path

from nexa_core.artifacts import MANIFEST, sha256_files


class CheckpointError(ValueError):
    pass


def resolve_checkpoint(folder: str | Path) -> tuple[str, str | None, str]:
    """(model to load, adapter to apply or None, the model its training started from) for a checkpoint folder.

    A LoRA checkpoint is a PEFT adapter folder (adapter_config.json names its base). A full
    fine-tune (the default) is a complete model folder whose manifest.json names the model the training
    started from."""
    folder = Path(folder)
    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        return base, str(folder), base
    manifest = folder / MANIFEST
    if not (folder / "config.json").is_file() or not manifest.is_file():
        raise ValueError(
            f"checkpoint folder {folder} holds neither a PEFT adapter (adapter_config.json) nor a "
            f"full model with its manifest.json"
        )
    return str(folder), None, json.loads(manifest.read_text())["base_model_path"]


def read_manifest(folder: str | Path) -> dict:
    """A model folder's manifest, {} for a folder this project did not write (or a hub id)."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def model_roles(checkpoint: str | Path) -> dict[str, tuple[str, str | None]]:
    """{role: (model path or hub id, adapter folder or None)} for each role (nexa_core.roles) a checkpoint has."""
    model, adapter, started_from = resolve_checkpoint(checkpoint)
    roles = {"student": (model, adapter)}
    start = read_manifest(started_from)
    before_reading = start.get("base_model_path")
    if before_reading and not start.get("built_from_config") and before_reading != started_from:
        roles |= {"read": (started_from, None), "base": (before_reading, None)}
    else:
        roles["base"] = (started_from, None)
    made = {} if adapter else read_manifest(model)
    if made.get("teacher"):
        roles["teacher"] = model_roles(made["teacher"])["student"]
    if made.get("pruned_sft"):
        roles["pruned_sft"] = (made["pruned_sft"], None)
    return roles


def present_roles(checkpoint: str | Path, wanted, domain: str, log=print) -> list[str]:
    """The wanted roles the checkpoint has, in the order wanted; each one it lacks is logged, not an error."""
    present = model_roles(checkpoint)
    for role in [r for r in wanted if r not in present]:
        why = " (its base is the model it read into)" if role == "read" else ""
        log(f"partition {domain}: no {role} model for this checkpoint{why}")
    return [r for r in wanted if r in present]


def verify_checkpoint(adapter_dir: str | Path, files_sha256: dict[str, str]) -> None:
    """Refuse an adapter whose files are not the ones its checkpoint record names: scores of a
    half-copied or overwritten adapter would be credited to the wrong checkpoint."""
    folder = Path(adapter_dir)
    hint = "re-materialize student_checkpoint for this partition to rebuild it"
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; {hint}")
    actual = sha256_files(folder)
    missing = sorted(set(files_sha256) - set(actual))
    changed = sorted(path for path, digest in files_sha256.items() if path in actual and actual[path] != digest)
    if missing or changed:
        raise CheckpointError(
            f"checkpoint folder {folder} does not match its record: missing files {missing}, "
            f"files whose sha256 differs {changed}; {hint}"
        )
