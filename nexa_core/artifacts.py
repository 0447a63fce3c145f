"""Model folders on disk. Every folder this project writes (a converted base, a read or fine-tuned student, a
distilled one, a release) is written beside its place as `<name>.partial` and renamed into place with its
manifest: the rename is the commit, so a folder that has a manifest is complete."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

MANIFEST = "manifest.json"  # what made the folder, and the sha256 of every other file in it


def sha256_files(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under the folder but the manifest."""
    out = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        out[str(path.relative_to(folder))] = digest.hexdigest()
    return out


def staging_for(folder: Path) -> Path:
    """The empty-to-be staging folder beside `folder` (a leftover of a crashed write is removed)."""
    staging = Path(folder).with_name(Path(folder).name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def commit_folder(staging: Path, folder: Path, manifest: dict, hash_files: bool = True) -> dict[str, str]:
    """Write the manifest (with the files' sha256s unless hash_files is False) into the staging folder and rename
    it to `folder`, replacing what was there; returns the sha256s ({} when not hashed)."""
    staging, folder = Path(staging), Path(folder)
    files = sha256_files(staging) if hash_files else {}
    written = {**manifest, "files": files} if hash_files else manifest
    (staging / MANIFEST).write_text(json.dumps(written, indent=1, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return files
