"""Dagster config classes made from the nexa_core dataclasses: every field of the dataclass under its own
name, type and default (a nested dataclass as a nested config class, a tuple as a list), plus the fields
the asset resolves itself. A setting is written once, in nexa_core; nexa_core.settings.from_settings builds
the dataclass back from the run's config."""

from dataclasses import MISSING, fields, is_dataclass
from typing import Any, get_args, get_origin, get_type_hints

import dagster as dg
from pydantic import create_model


def _field(kind, default) -> tuple[Any, Any]:
    if is_dataclass(kind):
        nested = settings_class(kind, kind.__name__.removesuffix("Config") + "Settings")
        return nested, nested()
    if get_origin(kind) is tuple:  # Dagster's config has lists, not tuples
        return list[get_args(kind)[0]], list(default)
    return kind, default


def settings_class(core: type, name: str, doc: str | None = None, **own: tuple[Any, Any]) -> type[dg.Config]:
    """A dg.Config class named `name` with the fields of the dataclass `core` and `own` (name=(type, default))."""
    hints, defaults = get_type_hints(core), core()
    spec = {f.name: _field(hints[f.name], getattr(defaults, f.name)) for f in fields(core) if f.init}
    missing = [f.name for f in fields(core) if f.init and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise TypeError(f"{core.__name__}: every field needs a default to be a setting, not {missing}")
    model = create_model(name, __base__=dg.Config, __module__=core.__module__, **spec, **own)
    model.__doc__ = doc or f"The settings of {core.__module__}.{core.__name__}, same names and defaults."
    return model
