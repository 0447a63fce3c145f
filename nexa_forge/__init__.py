"""nexa_forge: the NexaCompute SDK, a client of the Dagster webserver's GraphQL API, and the `nexa` CLI on it."""

from nexa_forge.client import (
    DEFAULT_URL,
    VERBS,
    Backfill,
    CodeLocationError,
    LogLine,
    Materialization,
    NexaForgeClient,
    NexaForgeError,
    Run,
    ServerUnreachable,
    StillRunning,
    UnknownAsset,
    UnknownDomain,
    openai_teacher,
)

__all__ = [
    "DEFAULT_URL",
    "VERBS",
    "Backfill",
    "CodeLocationError",
    "LogLine",
    "Materialization",
    "NexaForgeClient",
    "NexaForgeError",
    "Run",
    "ServerUnreachable",
    "StillRunning",
    "UnknownAsset",
    "UnknownDomain",
    "openai_teacher",
]
