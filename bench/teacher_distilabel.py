"""distilabel 1.5.3 baseline for the teacher-client benchmark: `distilabel_run` sends each conversation
once through `distilabel.models.llms.OpenAILLM` to an OpenAI-compatible server.

How "concurrency N" maps. OpenAILLM has no concurrency setting. `AsyncLLM.generate(inputs)` makes one
`agenerate` task per input and `asyncio.gather`s them all in `run_until_complete`. That makes the
size of the input list the in-flight count. A `TextGeneration` step in a Pipeline calls
`llm.generate_outputs(inputs=<one batch of input_batch_size rows>, num_generations=1, **generation_kwargs)`
once per batch, and batches run one after another within a step replica. So the idiomatic form of
"N in flight" is TextGeneration(input_batch_size=N) with one replica. This module does the same:
it cuts the conversations into consecutive chunks of N and calls `llm.generate_outputs` on each chunk.
Up to N requests are in flight, and each chunk waits for its slowest request before the next chunk
starts. That barrier is how distilabel itself works, not something this benchmark adds. It leaves
out the Pipeline's process, queue and batch-manager overhead, which only helps distilabel.

Client settings: timeout=60 s, the same as our teacher client. max_retries=0: retries never fire
against a healthy server, and with 0 any failure shows up as ok < requests instead of added latency.
(Our client defaults to 5.) Generation kwargs are max_new_tokens=max_tokens and temperature=0.0.
distilabel also sends its other defaults explicitly in the request body: n=1, logprobs=false,
top_logprobs=null, frequency_penalty=0, presence_penalty=0, top_p=1, stop=null.

Failures: as in a distilabel Pipeline, a chunk whose generate call raises produces no generations
for any of its rows. It counts as 0 ok and the run goes on.

openai 3.x: OpenAILLM.load() builds `OpenAI`/`AsyncOpenAI(base_url, api_key, max_retries, timeout,
default_headers)`, and openai 3.54.0 still accepts all of these. `chat.completions.create` still takes
every kwarg distilabel passes. The response fields it reads (choices[].message.content,
finish_reason, usage.prompt_tokens/completion_tokens) are unchanged. No workaround is needed.
The only noise is pydantic UnsupportedFieldAttributeWarning at import time, which is silenced below.

`distilabel_run` is synchronous. AsyncLLM drives its own event loop with `run_until_complete`, so
call it from plain sync code or from `asyncio.to_thread`, not from inside a running event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings

TIMEOUT_S = 60
MAX_RETRIES = 0


def _quiet() -> None:
    for name in ("distilabel", "openai", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("distilabel").propagate = False


def distilabel_run(
    base_url: str, model: str, conversations: list[list[dict]], concurrency: int, max_tokens: int = 256
) -> dict:
    """Send every conversation once through distilabel's OpenAILLM against base_url (an OpenAI-compatible
    server, e.g. http://127.0.0.1:PORT/v1). Returns {"seconds": wall seconds of the generation only
    (after the LLM is loaded), "requests": n, "ok": number of non-empty generations}."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    _quiet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from distilabel.models.llms import OpenAILLM

    llm = OpenAILLM(model=model, base_url=base_url, api_key="bench-key", max_retries=MAX_RETRIES, timeout=TIMEOUT_S)
    llm.load()
    _quiet()  # load() fetches the "distilabel.llm.<model>" logger, which is a child of "distilabel"
    generation_kwargs = {"max_new_tokens": max_tokens, "temperature": 0.0}

    ok = 0
    start = time.perf_counter()
    for lo in range(0, len(conversations), concurrency):
        chunk = conversations[lo : lo + concurrency]
        try:
            outputs = llm.generate_outputs(inputs=chunk, num_generations=1, **generation_kwargs)
        except Exception:  # distilabel's Pipeline would also emit this batch with no generations
            continue
        ok += sum(1 for out in outputs if out["generations"] and out["generations"][0])
    seconds = time.perf_counter() - start

    loop = llm.event_loop
    try:
        loop.run_until_complete(llm._aclient.close())
        llm._client.close()
    finally:
        llm.unload()
        if llm._new_event_loop and not loop.is_closed():
            loop.close()
            asyncio.set_event_loop(None)  # AsyncLLM.event_loop had installed it as the current loop
        llm._new_event_loop = False  # already closed; stop AsyncLLM.__del__ from closing it again
    return {"seconds": seconds, "requests": len(conversations), "ok": ok}
