"""The teacher resource: one interface, two backends.

- backend="heuristic" (default): the embedded offline generator (nexa_core/teacher/heuristic.py), so
  the graph runs with no endpoint and no network. It is a rule set, not a language model.
- backend="openai": any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama,
  llama.cpp server, TGI) at `base_url`, through nexa_core/teacher/openai_client.py. Set the key as
  `api_key=dg.EnvVar("OPENAI_API_KEY")`: Dagster resolves it at run time and shows only the
  variable's name in the UI, never the value.
"""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from nexa_core.settings import from_settings
from nexa_core.teacher import CollectPolicy, HeuristicTeacher, OpenAICompatibleTeacher, Pricing, price_for

_POLICY = CollectPolicy()  # the collection fields' defaults (nexa_core/teacher/policy.py)


class TeacherResource(dg.ConfigurableResource):
    """Who writes the question/answer pairs, and how they are collected (the fields of CollectPolicy,
    same names and defaults)."""

    backend: Literal["heuristic", "openai", "none"] = Field(
        default="heuristic", description="'heuristic' (offline default teacher), 'openai', or 'none' (a judge left off)"
    )
    model: str = Field(default="nexa-heuristic-v2", description="Model name sent to the endpoint")
    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    api_key: str | None = Field(default=None, description="Set with dg.EnvVar('OPENAI_API_KEY'), never a literal")
    temperature: float = 0.0
    max_tokens: int = 800
    mode: Literal["sync", "batch"] = Field(
        default=_POLICY.mode, description="'batch': the OpenAI Batch API (half price, results within 24 h)"
    )
    max_concurrency: int = _POLICY.max_concurrency
    requests_per_minute: float | None = Field(
        default=_POLICY.requests_per_minute, description="Budget of requests per minute"
    )
    tokens_per_minute: float | None = Field(
        default=_POLICY.tokens_per_minute, description="Budget of tokens (prompt + max_tokens) per minute"
    )
    timeout_s: float = 60.0
    max_attempts: int = Field(
        default=_POLICY.max_attempts, description="Attempts per request for failures a retry may fix"
    )
    backoff_base_s: float = _POLICY.backoff_base_s
    backoff_max_s: float = _POLICY.backoff_max_s
    unusable: dict[str, str] = Field(
        default=dict(_POLICY.unusable),
        description="What to do with a billed but unusable answer, by reason: 'retry' or 'quarantine'",
    )
    max_unusable_retries: int = _POLICY.max_unusable_retries
    max_tokens_cap: int = Field(
        default=_POLICY.max_tokens_cap, description="A 'length' retry doubles max_tokens up to this"
    )
    commit_every: int = _POLICY.commit_every
    commit_seconds: float = _POLICY.commit_seconds
    progress_seconds: float = Field(
        default=_POLICY.progress_seconds, description="How often progress goes to the run log"
    )
    budget_usd: float | None = Field(
        default=_POLICY.budget_usd, description="Spend limit per partition (cached responses count)"
    )
    prices: dict[str, dict[str, float]] = Field(
        default={},
        description="model -> {input, output[, batch_discount]} in USD per 1M tokens; adds to or "
        "overrides nexa_core/configs/teacher_prices.yaml",
    )
    store_for_recovery: bool = Field(
        default=True,
        description="Send store=true with request metadata, so responses paid for by a crashed run "
        "are fetched from the endpoint instead of paid again (OpenAI stored completions)",
    )
    batch_poll_seconds: float = _POLICY.batch_poll_seconds
    batch_max_requests: int = _POLICY.batch_max_requests
    batch_max_rounds: int = Field(
        default=_POLICY.batch_max_rounds, description="Batches submitted for the requests still without a usable answer"
    )

    def client(self):
        if self.backend == "none":
            raise ValueError("this teacher/judge resource is off (backend 'none'); set base_url to use one")
        if self.backend == "heuristic":
            return HeuristicTeacher(model=self.model)
        if not self.api_key:
            raise ValueError(
                "teacher backend 'openai' needs api_key (set NEXA_TEACHER_API_KEY_ENV's variable, "
                "OPENAI_API_KEY by default; any value for a local server that ignores keys)"
            )
        return OpenAICompatibleTeacher(
            self.model,
            self.base_url,
            self.api_key,
            self.timeout_s,
            self.store_for_recovery,
            max_connections=self.max_concurrency,
        )

    def params(self) -> dict:
        if self.backend != "openai":
            return {}
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def pricing(self) -> Pricing:
        return price_for(self.model, self.prices)

    def policy(self) -> CollectPolicy:
        return from_settings(CollectPolicy, self)
