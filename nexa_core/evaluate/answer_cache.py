"""Answers of models that did not change, kept: the off-the-shelf base and the model after reading answer the same
items the same way for every checkpoint trained from them, so eval_predictions and benchmark_scores read their answers
back instead of computing them again (a sweep or a new SFT round over the same test split asks them again).

One parquet file per key under `<artifact_root>/cache/answers/`. The key is everything the answers depend on: the
model's files (the sha256 of each), the items as the model sees them (the prompts' token ids, or the suites' files,
and the tokenizer's files that turn tokens back into text), the settings that shape the answers, and how they were
computed (precision, device, library versions). A change in any of them is another key, so nothing stale is read;
settings that change no answer (speed probes, threads, progress) are left out of it."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import polars as pl

from nexa_core.artifacts import sha256_files
from nexa_core.ids import content_id
from nexa_core.models.device import device_name

CACHED_ROLES = ("read", "base")  # the same for every checkpoint of a domain trained from the same reading and base
TOKENIZER_FILES = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab*",
    "merges.txt",
    "chat_template*",
)


def cache_folder(artifact_root: str) -> str:
    return f"{artifact_root.rstrip('/')}/cache/answers"


def model_digest(path: str, adapter: str | None = None) -> str | None:
    """sha256 over every file of the model folder (and of the adapter's); None for a model that is not a local
    folder (a hub id), whose files this process cannot see."""
    folders = [Path(p) for p in (path, adapter) if p]
    if not all(folder.is_dir() for folder in folders):
        return None
    return content_id(*[sha256_files(folder) for folder in folders], length=64)


def tokenizer_digest(folder: str | Path) -> str:
    """sha256 over the tokenizer's files in a checkpoint folder (not its weights: they change every checkpoint)."""
    files = sorted({p for pattern in TOKENIZER_FILES for p in Path(folder).glob(pattern) if p.is_file()})
    return content_id(*[(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files], length=64)


def computed_by(precision: str) -> dict:
    """How answers were computed, beside the settings: the same model in another precision, on another device or
    under other library versions may round differently and answer differently."""
    import torch
    import transformers

    return {
        "precision": precision,
        "device": device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def answers_key(stage: str, model: tuple[str, str | None], items: str, settings: dict, precision: str) -> str | None:
    """The key of a model's answers (`model`: its folder and adapter folder, as model_roles names them) to `items`
    under `settings`, computed in `precision` here; None for a model that is not a local folder."""
    digest = model_digest(*model)
    return None if digest is None else content_id(stage, digest, items, settings | computed_by(precision), length=32)


class AnswerCache:
    """Answers by key in a folder; a file is renamed into place complete, so a reader never sees half of one."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.parquet"

    def read(self, key: str, rows: int) -> pl.DataFrame | None:
        """The answers kept under `key`, or None when there are none (or not `rows` of them)."""
        path = self.path(key)
        try:
            frame = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError):  # absent, or not a parquet file: computed again
            return None
        return frame if frame.height == rows else None

    def write(self, key: str, answers: pl.DataFrame) -> None:
        """Written beside its place under a name of its own (two runs may keep the same answers at once), then
        renamed into place."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=self.folder, prefix=f".{key}.", suffix=".partial")
        os.close(handle)
        try:
            answers.write_parquet(partial)
            os.replace(partial, self.path(key))
        finally:
            Path(partial).unlink(missing_ok=True)
