"""One source for each setting, typed and strict.

A nexa_core dataclass holds a setting's name and type. The Dagster config class (or resource) that exposes it takes
each default from an instance of the dataclass, and `from_settings` builds the dataclass back from the config.

A launched stage's settings (`StageSettings`, the classes of nexa_core/recipe.py) are read the way TRL's
`HfArgumentParser` reads its configs: the stage's YAML holds the defaults (and, in its comments, what each setting
means); overrides are dotted keys (`lora.r`); an unknown or misspelt key anywhere (YAML, run config, --set, a sweep
point) or a value of the wrong type is a `SettingsError` naming the key, the stage and the closest known keys."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass, replace
from functools import cache
from pathlib import Path
from typing import ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
CONFIG_DIR = Path(__file__).parent / "configs"


def from_settings(cls: type[T], settings) -> T:
    """`cls` with each field read from the attribute of the same name on `settings` (a dg.Config, a
    resource, any object); a field typed as a dataclass is read from the nested settings object. A
    missing attribute is an AttributeError: the settings do not expose that field."""
    hints = get_type_hints(cls)
    values = {}
    for f in fields(cls):
        value = getattr(settings, f.name)
        values[f.name] = from_settings(hints[f.name], value) if is_dataclass(hints[f.name]) else value
    return cls(**values)


class SettingsError(ValueError):
    """An unknown, misspelt, missing or wrongly typed setting of a stage."""


def setting_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a settings dataclass, nested ones included (`lora`, `lora.r`, ...)."""
    hints = get_type_hints(cls)
    keys = []
    for f in fields(cls):
        keys.append(prefix + f.name)
        if is_dataclass(hints[f.name]):
            keys += setting_keys(hints[f.name], f"{prefix}{f.name}.")
    return keys


def unknown_setting(key: str, stage: str, known: list[str], prefix: str = "") -> SettingsError:
    """`prefix` + key is unknown; `known`: the keys beside it (under the same prefix)."""
    close = [prefix + k for k in difflib.get_close_matches(key, known, n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(close)}?" if close else f"known settings: {', '.join(prefix + k for k in known)}"
    return SettingsError(f"{stage}: unknown setting {prefix + key!r}; {hint}")


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value, hint, key: str, stage: str, choices=None):
    """`value` as `hint` wants it, or a SettingsError. YAML 1.1 reads 1e-4 as text: a float setting takes it."""
    origin, args = get_origin(hint), get_args(hint)
    wrong = SettingsError(f"{stage}: setting {key!r} wants {_type_name(hint)}, not {value!r}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key, stage, choices)
            except SettingsError:
                continue
        raise wrong
    if origin is Literal:
        if value not in args:
            raise SettingsError(f"{stage}: setting {key!r} is one of {', '.join(map(str, args))}, not {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):  # --set roles=student,base
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise wrong
        return origin(_coerce(v, args[0], key, stage, choices) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise wrong
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise wrong from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if hint is str:
        if isinstance(value, bool) and choices:  # `bf16: true` for a setting spelt auto/true/false
            value = str(value).lower()
        if not isinstance(value, str):
            raise wrong
        if choices and value not in choices:
            raise SettingsError(f"{stage}: setting {key!r} is one of {', '.join(choices)}, not {value!r}")
        return value
    if is_dataclass(hint):
        if not isinstance(value, dict):
            raise wrong
        return _record(hint, value, stage, f"{key}.")
    return value


def _record(cls: type[T], values: dict, stage: str, prefix: str = "") -> T:
    hints = get_type_hints(cls)
    names = {f.name: f for f in fields(cls) if f.init}
    for key in values:
        if key not in names:
            raise unknown_setting(key, stage, setting_keys(cls), prefix)
    out = {}
    for name, f in names.items():
        if name in values:
            out[name] = _coerce(values[name], hints[name], prefix + name, stage, f.metadata.get("choices"))
        elif f.default is MISSING and f.default_factory is MISSING:
            raise SettingsError(f"{stage}: setting {prefix + name!r} has no value")
    return cls(**out)


def with_overrides(values: dict, overrides: dict | None) -> dict:
    """A nested dict with dotted KEY=value overrides applied (`lora.r` reaches into `lora`)."""
    values = json.loads(json.dumps(values))  # a deep copy of plain data
    for key, value in (overrides or {}).items():
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SettingsError(f"setting {key!r}: {part!r} is not a section")
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):  # a section given in part: merged
            node[leaf] = with_overrides(node[leaf], flat(value))
        else:
            node[leaf] = value
    return values


def flat(values: dict, prefix: str = "") -> dict:
    """A nested dict as dotted keys; a dict-typed setting (trainer_args) stays one value."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and f"{prefix}{key}" not in _DICT_SETTINGS:
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


_DICT_SETTINGS = {"trainer_args"}  # settings whose value is itself a mapping (SFTConfig's other fields)

_KEY = re.compile(r"^(\s*)([A-Za-z_][\w]*):(.*)$")


@cache
def yaml_descriptions(path: Path) -> dict[str, str]:
    """{dotted key: its comment} from a settings YAML: the text after `#` on the key's line and on the comment
    lines that continue it (indented, no key)."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last = None
    for line in Path(path).read_text().splitlines():
        match = _KEY.match(line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            last = ".".join([*(name for _, name in stack), match.group(2)])
            stack.append((indent, match.group(2)))
            rest = match.group(3)
            out[last] = rest.split("#", 1)[1].strip() if "#" in rest else ""
        elif last and line.startswith(" ") and line.strip().startswith("#"):
            out[last] = f"{out[last]} {line.strip().lstrip('#').strip()}".strip()
    return out


UNHASHED = ("progress_seconds",)  # settings that change how a stage reports, not what it makes


@dataclass(kw_only=True)
class StageSettings:
    """A launched stage's settings: `load` reads its YAML (the defaults) with dotted overrides, `parse` a whole
    nested mapping (run config); both strict. The record is what the stage logs, hashes and stores."""

    stage: ClassVar[str]  # the asset that launches it, as errors and --set name it
    defaults_file: ClassVar[str]  # its YAML under nexa_core/configs/

    @classmethod
    def default_path(cls) -> Path:
        return CONFIG_DIR / cls.defaults_file

    @classmethod
    def parse(cls: type[T], values: dict, where: str = "") -> T:
        try:
            return _record(cls, values, cls.stage)
        except SettingsError as exc:
            raise SettingsError(f"{exc}{where}") from None

    @classmethod
    def load(cls: type[T], path: Path | str | None = None, overrides: dict | None = None) -> T:
        """The YAML at `path` (default: the stage's own) with dotted `overrides` applied."""
        path = Path(path or cls.default_path())
        values = yaml.safe_load(path.read_text()) or {}
        try:
            cls.parse(values)
        except SettingsError as exc:
            raise SettingsError(f"{exc} (in {path})") from None
        return cls.parse(with_overrides(values, overrides))

    @classmethod
    def defaults(cls: type[T]) -> T:
        return _defaults(cls)

    @classmethod
    def descriptions(cls) -> dict[str, str]:
        return yaml_descriptions(cls.default_path())

    def to_dict(self) -> dict:
        return asdict(self)

    def changes(self) -> dict:
        """The dotted settings that differ from the YAML's: what a request carries as --set."""
        mine, base = flat(self.to_dict()), flat(type(self).defaults().to_dict())
        return {key: value for key, value in mine.items() if base.get(key, MISSING) != value}

    def digest(self) -> str:
        """config_hash: of the settings as given (before a student's kind fills its section in), but those that
        change nothing the stage makes (UNHASHED: how often it reports progress)."""
        made = {k: v for k, v in self.to_dict().items() if k not in UNHASHED}
        return hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest()[:12]

    def replace(self: T, **changes) -> T:
        return replace(self, **changes)


@cache
def _defaults(cls):
    return cls.load()


@dataclass(kw_only=True)
class KindSettled(StageSettings):
    """Settings that differ by kind of student: each field of `kind_fields`' class, left unset (None) at the top
    level, is taken from the `pretrained` section for a real base or the `from_config` one for a student built
    from a config (trained from random weights). A value set at the top level wins over the section's."""

    kind_fields: ClassVar[type]

    @classmethod
    def descriptions(cls) -> dict[str, str]:
        said = yaml_descriptions(cls.default_path())
        unset = "null: the pretrained or from_config section's, by kind of student"
        return said | {f.name: said.get(f.name) or unset for f in fields(cls.kind_fields)}

    def for_student(self: T, built_from_config: bool) -> T:
        section = getattr(self, "from_config" if built_from_config else "pretrained")
        names = [f.name for f in fields(self.kind_fields)]
        settled = replace(self, **{n: getattr(section, n) for n in names if getattr(self, n) is None})
        unset = [n for n in names if getattr(settled, n) is None]
        if unset:
            kind = "from_config" if built_from_config else "pretrained"
            raise SettingsError(f"{self.stage}: no value for {', '.join(unset)}: set it, or in the {kind} section")
        return settled
