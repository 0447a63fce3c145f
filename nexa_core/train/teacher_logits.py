"""The teacher's top-k log-probabilities on the domain's SFT train split: `python -m nexa_core.train.teacher_logits`.

One row per example: its tokens as the student will see them (the chat template's prompt and the answer), the
labels (-100 on the prompt), and at every position the k most likely next tokens with their log-probabilities.
The student_distilled stage trains on these without the teacher in memory."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from nexa_core.files import write_atomically
from nexa_core.stage import TeacherLogitsRequest, serve

TEACHER_LOGITS = {
    "example_id": pl.Utf8,
    "input_ids": pl.List(pl.Int32),
    "labels": pl.List(pl.Int32),
    "token_ids": pl.List(pl.List(pl.Int32)),
    "logprobs": pl.List(pl.List(pl.Float32)),
}


def teacher_top_k(model, tokenizer, conversations: list[list[dict]], k: int, batch_size: int, log=print) -> list[dict]:
    """Each conversation's tokens, labels and the teacher's top-k at every position."""
    import torch

    from nexa_core.train.kd import padded, top_k_logprobs
    from nexa_core.train.trainer import conversation_rows

    rows = conversation_rows(tokenizer, conversations)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = padded(chunk, pad_id)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        values, indices = top_k_logprobs(logits, k)
        for i, row in enumerate(chunk):
            n = len(row["input_ids"])
            row["logprobs"], row["token_ids"] = values[i, :n].tolist(), indices[i, :n].tolist()
        log(f"teacher: {min(start + batch_size, len(rows))}/{len(rows)} examples")
    return rows


def main(argv: list[str] | None = None) -> int:
    request = TeacherLogitsRequest.parse(argv, __doc__.splitlines()[0])
    return serve(request, lambda log: cache_teacher(request, log))


def cache_teacher(request: TeacherLogitsRequest, log) -> dict:
    import json
    import time

    from nexa_core.evaluate.generate import load_for_eval, verify_checkpoint
    from nexa_core.train.trainer import read_sft

    if request.expect_sha256:
        verify_checkpoint(request.teacher, json.loads(request.expect_sha256))
    k, batch_size = int(request.overrides.get("k", 32)), int(request.overrides.get("batch_size", 16))
    train = read_sft(request.sft_uri, request.sft_version, request.domain)["train"]
    model, tokenizer = load_for_eval(request.teacher, "student", "false")  # fp32: the distributions as they are
    start = time.perf_counter()
    rows = teacher_top_k(model, tokenizer, train["messages"].to_list(), k, batch_size, log)
    frame = pl.DataFrame([{"example_id": e, **r} for e, r in zip(train["example_id"], rows)], schema=TEACHER_LOGITS)
    write_atomically(Path(request.output), frame.write_parquet)
    return {
        "output": request.output,
        "examples": frame.height,
        "tokens": int(frame["input_ids"].list.len().sum()),
        "k": k,
        "vocab_size": int(model.get_output_embeddings().weight.shape[0]),
        "seconds": round(time.perf_counter() - start, 2),
    }


if __name__ == "__main__":
    sys.exit(main())
