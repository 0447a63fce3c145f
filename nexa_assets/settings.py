"""Dagster config classes made from the nexa_core dataclasses: every field of the dataclass under its own
name, type and default (a nested dataclass as a nested config class, a tuple as a list), plus the fields
the asset resolves itself. A setting is written once, in nexa_core; nexa_core.settings.from_settings builds
the dataclass back from the run's config. A launched stage's settings (nexa_core/recipe.py) take their defaults
from the stage's YAML and their descriptions from its comments, so the launchpad shows both."""

from dataclasses import MISSING, fields, is_dataclass
from typing import Any, get_args, get_origin, get_type_hints

import dagster as dg
from pydantic import Field, create_model

from nexa_core.settings import StageSettings


def _field(kind, default, name: str, descriptions: dict[str, str], prefix: str) -> tuple[Any, Any]:
    description = descriptions.get(prefix + name) or None
    if is_dataclass(kind):
        nested = _config_class(kind, kind.__name__.removesuffix("Config") + "Settings", default, descriptions, name)
        return nested, Field(default=nested(), description=description)
    if get_origin(kind) is tuple:  # Dagster's config has lists, not tuples
        return list[get_args(kind)[0]], Field(default=list(default), description=description)
    if isinstance(default, (list, dict)):
        default = type(default)(default)
    return kind, Field(default=default, description=description)


def _config_class(core: type, name: str, defaults, descriptions: dict[str, str], prefix: str = "", **own):
    hints = get_type_hints(core)
    prefix = f"{prefix}." if prefix else ""
    spec = {
        f.name: _field(hints[f.name], getattr(defaults, f.name), f.name, descriptions, prefix)
        for f in fields(core)
        if f.init and f.name not in own
    }
    added = {key: value for key, value in own.items() if value is not None}  # None: not a setting of the asset
    return create_model(name, __base__=dg.Config, __module__=core.__module__, **spec, **added)


def settings_class(core: type, name: str, doc: str | None = None, **own: tuple[Any, Any]) -> type[dg.Config]:
    """A dg.Config class named `name` with the fields of the dataclass `core` and `own` (name=(type, default)); an
    `own` field replaces the core field of that name, and `name=None` leaves it out (the asset resolves it). A
    StageSettings class takes its defaults and descriptions from its YAML; any other dataclass needs a default on
    every field."""
    if issubclass(core, StageSettings):
        defaults, descriptions = core.defaults(), core.descriptions()
    else:
        missing = [f.name for f in fields(core) if f.init and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise TypeError(f"{core.__name__}: every field needs a default to be a setting, not {missing}")
        defaults, descriptions = core(), {}
    model = _config_class(core, name, defaults, descriptions, **own)
    model.__doc__ = doc or f"The settings of {core.__module__}.{core.__name__}, same names and defaults."
    return model


def stage_settings(core: type[StageSettings], config: dg.Config, **resolved) -> StageSettings:
    """The typed record of a stage from its asset's run config (the asset's own fields left out, `resolved` ones
    put in): a wrong value is a dg.Failure naming the setting."""
    from nexa_core.settings import SettingsError

    names = {f.name for f in fields(core)}
    values = {k: v for k, v in config.model_dump().items() if k in names} | resolved
    try:
        return core.parse(values)
    except SettingsError as exc:
        raise dg.Failure(str(exc)) from None


def config_keys(config_type, prefix: str = "") -> set[str]:
    """The dotted keys of a Dagster config type's fields, nested ones included (`lora`, `lora.r`)."""
    keys = set()
    for name, field in (getattr(config_type, "fields", None) or {}).items():
        keys.add(prefix + name)
        keys |= config_keys(field.config_type, f"{prefix}{name}.")
    return keys


def node_settings(nodes) -> dict[str, set[str]]:
    """Each node (an op, or an asset's op, named after it) with the dotted keys of its config."""
    return {n.name: config_keys(n.config_schema.config_type) if n.config_schema else set() for n in nodes}


def pinned(name: str) -> tuple:
    """A config field pinning the Delta version a stage reads (null: the newest)."""
    return (int | None, Field(default=None, description=f"read {name} at this Delta version; null: the newest"))


def restatements_read(delta, settings, pinned_version: int | None) -> tuple[str | None, int | None, str]:
    """(uri, version, key) of the restatements a training stage reads: none when its restatement_passes is 0; the
    key (the settings' digest, with the version when read) names its output folder, so new restatements train anew."""
    from nexa_core.ids import content_id
    from nexa_core.tables import RESTATEMENTS

    if not settings.restatement_passes:
        return None, None, settings.digest()
    version = delta.version(RESTATEMENTS) if pinned_version is None else pinned_version
    if version is None:
        raise dg.Failure(
            f"{settings.stage}: restatement_passes is {settings.restatement_passes} but no restatements "
            "table exists; materialize restatements first"
        )
    return delta.uri(RESTATEMENTS), version, content_id(settings.digest(), RESTATEMENTS, version)[:12]


REPLAY_OF = (
    str,
    Field(default="", description="the release this run replays (e.g. physics-v1): it trains anew in its own folder"),
)
