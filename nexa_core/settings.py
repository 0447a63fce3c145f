"""One source for each setting: a nexa_core dataclass holds its names and defaults. The Dagster config
class (or resource) that exposes it takes each default from an instance of the dataclass, and
`from_settings` builds the dataclass back from the config, so a default is written in one place."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import TypeVar, get_type_hints

T = TypeVar("T")


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
