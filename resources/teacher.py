"""The teacher resource: one interface, two backends.

- backend="heuristic" (default): the embedded offline generator in nexa_core.teacher, so the graph
  runs with no endpoint and no network. It is a rule set, not a language model.
- backend="openai": any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama,
  llama.cpp server, TGI) through the `openai` client with `base_url`. Set the key as
  `api_key=dg.EnvVar("OPENAI_API_KEY")`: Dagster resolves it at run time and shows only the
  variable's name in the UI, never the value.
"""

from __future__ import annotations

import time
from typing import Literal

import dagster as dg
from pydantic import Field

from nexa_core.teacher import Completion, HeuristicTeacher, Pricing


class OpenAICompatibleTeacher:
    name = "openai"

    def __init__(self, model: str, base_url: str | None, api_key: str, timeout_s: float, max_retries: int):
        from openai import AsyncOpenAI

        self.model = model
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    async def complete(self, messages: list[dict], params: dict) -> Completion:
        start = time.perf_counter()
        response = await self._client.chat.completions.create(model=self.model, messages=messages, **params)
        choice = response.choices[0]
        usage = response.usage
        return Completion(text=choice.message.content or "", finish_reason=choice.finish_reason or "",
                          prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                          completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                          latency_s=time.perf_counter() - start)


class TeacherResource(dg.ConfigurableResource):
    """Who writes the question/answer pairs."""

    backend: Literal["heuristic", "openai"] = Field(default="heuristic",
                                                    description="'heuristic' (offline default) or 'openai'")
    model: str = Field(default="nexa-heuristic-v1", description="Model name sent to the endpoint")
    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    api_key: str | None = Field(default=None, description="Set with dg.EnvVar('OPENAI_API_KEY'), never a literal")
    temperature: float = 0.0
    max_tokens: int = 800
    max_concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 5
    usd_per_1m_input: float = 0.0
    usd_per_1m_output: float = 0.0

    def client(self):
        if self.backend == "heuristic":
            return HeuristicTeacher(model=self.model)
        if not self.api_key:
            raise ValueError("teacher backend 'openai' needs api_key (set NEXA_TEACHER_API_KEY_ENV's variable, "
                             "OPENAI_API_KEY by default; any value for a local server that ignores keys)")
        return OpenAICompatibleTeacher(self.model, self.base_url, self.api_key, self.timeout_s, self.max_retries)

    def params(self) -> dict:
        if self.backend == "heuristic":
            return {}
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def pricing(self) -> Pricing:
        return Pricing(self.usd_per_1m_input, self.usd_per_1m_output)
