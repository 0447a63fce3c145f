"""raw_documents: load every supported file of a domain folder into one frame of documents.

Formats: .jsonl and .jsonl.gz (one JSON object per line with "text", optional "topic", "title"),
.parquet (same columns), .txt and .md (one document per file; topic from the file name, title from a
leading "# " heading). Anything that cannot become a document goes to the quarantine frame with the
file, the row and the reason: nothing is silently dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from nexa_core import schemas
from nexa_core.ids import content_id

SUPPORTED_SUFFIXES = (".jsonl.gz", ".jsonl", ".parquet", ".txt", ".md")


class DomainFolderError(ValueError):
    """The domain's raw folder is missing or holds no supported file."""


@dataclass(frozen=True)
class LoadLimits:
    max_file_bytes: int = 50_000_000
    max_doc_chars: int = 200_000
    min_doc_chars: int = 20
    # A JSON Lines file with at least this many undecodable lines, and more of them than good ones, is
    # not JSON Lines (random bytes, a binary file misnamed): one quarantine row for the file, with counts.
    min_garbage_lines: int = 20


def supported(path: Path) -> bool:
    """A file the loader reads, or a link: one pointing nowhere, out of the raw root or to a folder is
    quarantined rather than skipped."""
    if path.name.startswith("."):
        return False
    return path.is_symlink() or (path.is_file() and path.name.endswith(SUPPORTED_SUFFIXES))


def outside_reason(path: Path, raw_root: Path) -> tuple[str, str] | None:
    """(reason, detail) when the path does not resolve to a file inside the raw root. A link out of it
    would make any file of the machine a document, and with a remote teacher send its text away."""
    target, root = path.resolve(), Path(raw_root).resolve()
    if not target.exists():
        return "broken_link", f"links to {target}, which does not exist"
    if not target.is_relative_to(root):
        return "outside_raw_root", f"resolves to {target}, outside the raw root {root}: not read"
    if target.is_dir():
        return "linked_folder", f"links to the folder {target}; folder links are not followed: move its files here"
    if not path.name.endswith(SUPPORTED_SUFFIXES):
        return "unsupported", f"links to {target}, not one of {', '.join(SUPPORTED_SUFFIXES)}"
    return None


def domain_folders(raw_root: Path) -> list[Path]:
    """The folders under the raw root, one per domain; hidden ones are not domains."""
    if not Path(raw_root).is_dir():
        return []
    return sorted(p for p in Path(raw_root).iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_files(folder: Path) -> list[Path]:
    """The files of a domain folder the loader reads (and the links it quarantines)."""
    return sorted(p for p in Path(folder).rglob("*") if supported(p))


def folder_fingerprint(folder: Path) -> str:
    """Hash of (relative path, size, mtime) of every file load_domain reads: it changes when they do."""
    digest = hashlib.sha256()
    for path in folder_files(folder):
        stat = path.stat() if path.exists() else path.lstat()  # a broken link is read (and quarantined) too
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def domain_files(raw_root: Path, domain: str) -> list[Path]:
    folder = Path(raw_root) / domain
    if not folder.is_dir():
        raise DomainFolderError(
            f"partition '{domain}': raw folder {folder} does not exist; create it and add "
            f"{', '.join(SUPPORTED_SUFFIXES)} files, or remove the partition"
        )
    files = folder_files(folder)
    if not files:
        raise DomainFolderError(
            f"partition '{domain}': raw folder {folder} has no supported files ({', '.join(SUPPORTED_SUFFIXES)})"
        )
    return files


def _topic_from_name(path: Path) -> str:
    name = path.name
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _records_from_text_file(path: Path) -> list[tuple[int, dict]]:
    text = path.read_bytes().decode("utf-8")  # UnicodeDecodeError is quarantined by the caller
    title = None
    body = text.strip()
    first, _, rest = body.partition("\n")
    if path.suffix == ".md" and first.startswith("# "):
        title, body = first[2:].strip(), rest.strip()
    return [(0, {"text": body, "topic": _topic_from_name(path), "title": title})]


class NotJsonLines(ValueError):
    """Most lines of a .jsonl file are not JSON: the file is quarantined whole."""


def _json_lines(lines, min_garbage: int = 20) -> list[tuple[int, dict | Exception]]:
    rows = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue  # blank separator lines are not rows
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            value = exc
        rows.append((number, value))
    bad = [(n, v) for n, v in rows if isinstance(v, Exception)]
    if len(bad) >= min_garbage and 2 * len(bad) > len(rows):
        first_line, first_error = bad[0]
        raise NotJsonLines(
            f"{len(bad)} of {len(rows)} lines are not JSON (first at line {first_line}: "
            f"{type(first_error).__name__}); the file is not JSON Lines, nothing of it was read"
        )
    return rows


def _records_from_file(path: Path, limits: LoadLimits) -> list[tuple[int, dict | Exception]]:
    if path.name.endswith(".jsonl.gz"):
        with gzip.open(path, "rb") as fh:
            return _json_lines(fh.read().split(b"\n"), limits.min_garbage_lines)
    if path.suffix == ".jsonl":
        return _json_lines(path.read_bytes().split(b"\n"), limits.min_garbage_lines)
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        return list(enumerate(frame.to_dicts(), start=1))
    return _records_from_text_file(path)


def _check_record(value, limits: LoadLimits) -> tuple[str, str] | None:
    """Return (reason, detail) when the record cannot be a document."""
    if isinstance(value, Exception):
        return "undecodable", f"{type(value).__name__}: {value}"[:500]
    if not isinstance(value, dict):
        return "wrong_schema", f"expected a JSON object, got {type(value).__name__}"
    text = value.get("text")
    if not isinstance(text, str):
        return "wrong_schema", f"'text' must be a string, got {type(text).__name__}; keys: {sorted(value)}"
    for key in ("topic", "title"):
        if value.get(key) is not None and not isinstance(value[key], str):
            return "wrong_schema", f"'{key}' must be a string"
    n = len(text.strip())
    if n < limits.min_doc_chars:
        return "empty", f"text has {n} characters (< {limits.min_doc_chars})"
    if n > limits.max_doc_chars:
        return "oversized", f"text has {n} characters (> {limits.max_doc_chars})"
    return None


def load_domain(raw_root: Path, domain: str, limits: LoadLimits = LoadLimits()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (documents, quarantine) for one domain partition."""
    raw_root = Path(raw_root)
    docs: list[dict] = []
    bad: list[dict] = []
    seen: dict[str, str] = {}

    def quarantine(path: Path, row: int | None, reason: str, detail: str, content: str | None = None):
        bad.append(
            {
                "domain": domain,
                "source_path": rel(path),
                "source_row": row,
                "reason": reason,
                "detail": detail,
                "content": None if content is None else content[:2000],
            }
        )

    def rel(path: Path) -> str:
        try:
            return str(path.relative_to(raw_root))
        except ValueError:
            return str(path)

    for path in domain_files(raw_root, domain):
        if problem := outside_reason(path, raw_root):
            quarantine(path, None, *problem)
            continue
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            quarantine(path, None, "oversized", f"file is {size} bytes (> {limits.max_file_bytes})")
            continue
        try:
            records = _records_from_file(path, limits)
        except Exception as exc:  # a file that cannot be opened at all is one quarantine row
            quarantine(path, None, "undecodable", f"{type(exc).__name__}: {exc}"[:500])
            continue
        if not records:
            quarantine(path, None, "empty", "file has no records")
        for row, value in records:
            problem = _check_record(value, limits)
            if problem:
                content = (
                    value
                    if isinstance(value, str)
                    else (
                        json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, Exception) else None
                    )
                )
                quarantine(path, row, *problem, content)
                continue
            text = value["text"].strip()
            doc_id = content_id(domain, text)
            if doc_id in seen:
                quarantine(path, row, "duplicate_document", f"same text as {seen[doc_id]}", text)
                continue
            seen[doc_id] = f"{rel(path)} row {row}"
            docs.append(
                {
                    "domain": domain,
                    "doc_id": doc_id,
                    "topic": (value.get("topic") or _topic_from_name(path)).strip(),
                    "title": value.get("title"),
                    "text": text,
                    "source_path": rel(path),
                    "source_row": row,
                    "n_chars": len(text),
                }
            )
    documents = pl.DataFrame(docs, schema=schemas.RAW_DOCUMENTS) if docs else schemas.empty(schemas.RAW_DOCUMENTS)
    quarantined = pl.DataFrame(bad, schema=schemas.RAW_QUARANTINE) if bad else schemas.empty(schemas.RAW_QUARANTINE)
    return documents, quarantined
