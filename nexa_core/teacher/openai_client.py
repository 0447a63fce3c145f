"""The OpenAI-compatible teacher: any chat completions endpoint (OpenAI, vLLM, Ollama, llama.cpp
server, TGI) at `base_url`. resources/teacher.py configures it.

Chat completions are POSTed with aiohttp: on 2 cores the `openai` SDK spent about 2 ms of CPU per
call (460 calls/s at best), a plain aiohttp POST about 0.4 ms. The Batch API, files and stored
completions, a handful of calls per partition, go through the `openai` SDK. Each chat completion is
one attempt: retries, backoff and rate limits belong to the collector (calls.py), which counts every
attempt and shares a Retry-After pause across the pool; this module only says which failures a retry
may fix.
"""

from __future__ import annotations

import asyncio
import json
import time

from nexa_core.teacher.types import (
    FINISHED,
    BatchResults,
    Completion,
    PairBrief,
    RequestRejected,
    RetryableError,
    TeacherUnavailable,
)

RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx


def retry_after_seconds(headers) -> float | None:
    """OpenAI sends `retry-after-ms`; HTTP's `Retry-After` is seconds (an HTTP date is not honoured)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        try:
            return float(value) * scale if value is not None else None
        except ValueError:
            continue
    return None


def status_error(code: int, headers, message: str) -> Exception:
    """What the collector may do after an HTTP error status. A 401 message is never repeated:
    OpenAI's quotes part of the key."""
    if code in RETRYABLE_STATUS or code >= 500:
        return RetryableError(f"http_{code}", retry_after_seconds(headers))
    if code == 401:
        return TeacherUnavailable(
            "the teacher endpoint refused the API key (HTTP 401); check the variable named by the resource's api_key"
        )
    if code in (403, 404):
        return TeacherUnavailable(f"the teacher endpoint answered HTTP {code}: {message}; check model and base_url")
    return RequestRejected(f"http_{code}: {message}")


def completion_from(body: dict, latency_s: float) -> Completion:
    choice = body["choices"][0]
    usage = body.get("usage") or {}
    return Completion(
        text=(choice.get("message") or {}).get("content") or "",
        finish_reason=choice.get("finish_reason") or "",
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        latency_s=latency_s,
    )


class OpenAICompatibleTeacher:
    name = "openai"
    paid = True

    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key: str,
        timeout_s: float,
        store_for_recovery: bool,
        max_connections: int,
    ):
        self.model = model
        self._base = (base_url or "https://api.openai.com/v1").rstrip("/")
        self._key, self._timeout, self._store, self._connections = (
            api_key,
            timeout_s,
            store_for_recovery,
            max_connections,
        )
        self._session = self._sdk = None  # made inside the collector's event loop

    def _scrub(self, text: str) -> str:
        return text[:300].replace(self._key, "[redacted]") if self._key else text[:300]

    async def complete(
        self, messages: list[dict], params: dict, tag: dict | None = None, brief: PairBrief | None = None
    ) -> Completion:
        """One attempt. The brief goes unused: a language model reads the rendered messages."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"Authorization": f"Bearer {self._key}"},
            )
        body = {"model": self.model, "messages": messages, **params}
        if tag and self._store:
            body |= {"store": True, "metadata": tag}
        start = time.perf_counter()
        try:
            async with self._session.post(f"{self._base}/chat/completions", json=body) as response:
                raw = await response.read()
                if response.status != 200:
                    try:
                        message = json.loads(raw)["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        message = raw[:200].decode(errors="replace")
                    raise status_error(response.status, response.headers, self._scrub(str(message)))
        except asyncio.TimeoutError:
            raise RetryableError("timeout") from None
        except aiohttp.ClientError as exc:  # refused, reset, closed mid-response
            raise RetryableError(f"connection: {type(exc).__name__}") from None
        try:
            return completion_from(json.loads(raw), time.perf_counter() - start)
        except (ValueError, KeyError, IndexError, TypeError):
            raise RetryableError("malformed_body") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._sdk is not None:
            await self._sdk.close()
        self._session = self._sdk = None

    # --- through the openai SDK: stored completions and the Batch API ----------------------

    def _client(self):
        if self._sdk is None:
            from openai import AsyncOpenAI

            self._sdk = AsyncOpenAI(base_url=self._base, api_key=self._key, timeout=self._timeout, max_retries=5)
        return self._sdk

    async def _sdk_call(self, coroutine):
        """The SDK retries these few calls itself; what still fails stops the partition, worded safely."""
        import openai

        try:
            return await coroutine
        except openai.APIStatusError as exc:
            error = status_error(exc.status_code, exc.response.headers, self._scrub(str(exc.message)))
        except (openai.APIError, ValueError) as exc:
            error = RetryableError(self._scrub(f"{type(exc).__name__}: {exc}"))
        raise TeacherUnavailable(f"teacher endpoint: {error}") from None

    async def recover(self, chunk_ids: list[str]) -> dict[str, Completion] | None:
        """Completions the endpoint stored for these dispatch chunks, by request hash; None when the
        endpoint keeps none (stored completions are an OpenAI feature) or recovery is off."""
        import openai

        if not self._store:
            return None
        found: dict[str, Completion] = {}
        try:
            for chunk_id in chunk_ids:
                async for stored in self._client().chat.completions.list(metadata={"nexa_chunk": chunk_id}, limit=100):
                    request = (stored.metadata or {}).get("nexa_request")
                    if request and request not in found:
                        found[request] = completion_from(stored.model_dump(), 0.0)
        except (openai.NotFoundError, openai.BadRequestError):
            return None
        return found

    async def submit_batch(self, lines: list[dict], metadata: dict) -> str:
        body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        client = self._client()
        upload = await self._sdk_call(client.files.create(file=("requests.jsonl", body), purpose="batch"))
        batch = await self._sdk_call(
            client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", metadata=metadata
            )
        )
        return batch.id

    async def find_batch(self, batch_key: str) -> str | None:
        async def search():
            async for batch in self._client().batches.list(limit=100):
                if (batch.metadata or {}).get("nexa_batch_key") == batch_key and batch.status not in (
                    "failed",
                    "expired",
                    "cancelled",
                    "cancelling",
                ):
                    return batch.id
            return None

        return await self._sdk_call(search())

    async def batch_results(self, batch_id: str) -> BatchResults:
        client = self._client()
        batch = await self._sdk_call(client.batches.retrieve(batch_id))
        results = BatchResults(status=batch.status)
        if batch.status not in FINISHED:
            return results
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._sdk_call(client.files.content(file_id))
            for raw in content.text.splitlines():
                if not raw.strip():
                    continue
                line = json.loads(raw)
                response = line.get("response") or {}
                if line.get("error") or response.get("status_code") != 200:
                    error = line.get("error") or (response.get("body") or {}).get("error") or {}
                    results.errors[line["custom_id"]] = str(error.get("code") or response.get("status_code"))
                else:
                    results.answers[line["custom_id"]] = completion_from(response["body"], 0.0)
        return results
