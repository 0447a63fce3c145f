"""Versioned prompt templates. A template is a file under nexa_core/prompts/ named <name>_v<N>.txt:
a YAML front matter with the system message, then the user message. Both are str.format templates.
The sha256 of the file is recorded on every request, so a changed prompt is a new request (and a new
cache entry), never a silent reuse of answers to an old prompt."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from nexa_core.ids import content_id

PROMPTS_DIR = Path(__file__).parents[1] / "prompts"


def versioned_file(folder: Path, name: str, suffix: str, what: str) -> Path:
    """The file of a versioned template (prompt, rubric); a missing one names those that exist."""
    path = Path(folder) / f"{name}{suffix}"
    if not path.is_file():
        known = sorted(p.stem for p in Path(folder).glob(f"*{suffix}"))
        raise FileNotFoundError(f"{what} '{name}' not found in {folder}; known: {known}")
    return path


def render_messages(label: str, system: str, user: str, fields: dict) -> list[dict]:
    """System and user messages from str.format templates; a missing field is a ValueError naming it."""
    try:
        return [
            {"role": "system", "content": system.format(**fields).strip()},
            {"role": "user", "content": user.format(**fields).strip()},
        ]
    except KeyError as exc:
        raise ValueError(f"{label} needs field {exc}; got {sorted(fields)}") from exc


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str
    user: str
    sha256: str

    def render(self, **fields) -> list[dict]:
        return render_messages(f"prompt template {self.name}", self.system, self.user, fields)

    def request_id(self, messages: list[dict]) -> str:
        """The id of a request rendered from this template: the same file and the same messages give
        the same request, in the first round and in feedback rounds alike."""
        return content_id(self.sha256, messages)


@cache
def load_template(name: str, prompts_dir: Path = PROMPTS_DIR) -> PromptTemplate:
    raw = versioned_file(prompts_dir, name, ".txt", "prompt template").read_text(encoding="utf-8")
    _, front, user = raw.split("---\n", 2)
    meta = yaml.safe_load(front) or {}
    return PromptTemplate(
        name=name, system=meta.get("system", ""), user=user, sha256=hashlib.sha256(raw.encode("utf-8")).hexdigest()
    )
