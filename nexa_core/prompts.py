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

PROMPTS_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str
    user: str
    sha256: str

    def render(self, **fields) -> list[dict]:
        try:
            return [
                {"role": "system", "content": self.system.format(**fields).strip()},
                {"role": "user", "content": self.user.format(**fields).strip()},
            ]
        except KeyError as exc:
            raise ValueError(f"prompt template {self.name} needs field {exc}; got {sorted(fields)}") from exc


@cache
def load_template(name: str, prompts_dir: Path = PROMPTS_DIR) -> PromptTemplate:
    path = Path(prompts_dir) / f"{name}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in Path(prompts_dir).glob("*.txt"))
        raise FileNotFoundError(f"prompt template '{name}' not found in {prompts_dir}; known: {known}")
    raw = path.read_text(encoding="utf-8")
    _, front, user = raw.split("---\n", 2)
    meta = yaml.safe_load(front) or {}
    return PromptTemplate(name=name, system=meta.get("system", ""), user=user,
                          sha256=hashlib.sha256(raw.encode("utf-8")).hexdigest())
