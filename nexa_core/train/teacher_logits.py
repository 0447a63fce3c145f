"""The teacher's top-k log-probabilities on the domain's SFT train split and its documents:
`python -m nexa_core.train.teacher_logits`.

One row per example: its tokens as the student will see them, the labels, and at every position the k most likely
next tokens with their log-probabilities. A QA pair is the chat template's prompt and the answer (labels -100 on
the prompt); a document block is what the teacher read before it was fine-tuned (the documents whole, then
`sentence_passes` shuffled passes over their sentences, cut into blocks of `max_length` tokens), every token
labelled: a pruned student loses knowledge with its layers and relearns it from the teacher's reading too.
The student_distilled stage trains on these without the teacher in memory."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from nexa_core.files import write_atomically
from nexa_core.stage import TeacherLogitsRequest, serve

TEACHER_LOGITS = {
    "example_id": pl.Utf8,
    "source": pl.Utf8,  # "sft" (a train QA pair) or "document" (a block of the corpus)
    "input_ids": pl.List(pl.Int32),
    "labels": pl.List(pl.Int32),
    "token_ids": pl.List(pl.List(pl.Int32)),
    "logprobs": pl.List(pl.List(pl.Float32)),
}


def teacher_top_k(model, tokenizer, rows: list[dict], k: int, batch_size: int, log=print) -> list[dict]:
    """Rows of input_ids and labels, each with the teacher's top-k at every position."""
    import torch

    from nexa_core.train.kd import padded, top_k_logprobs

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
        log(f"teacher: {min(start + batch_size, len(rows))}/{len(rows)} rows")
    return rows


def distillation_rows(tokenizer, train, documents: list[str], sentence_passes: int, max_length: int) -> list[dict]:
    """The train QA pairs, then the document blocks (ids from their text, so a re-run keys them alike)."""
    from nexa_core.ids import content_id
    from nexa_core.train.rows import conversation_rows, document_rows, reading_texts

    pairs = conversation_rows(tokenizer, train["messages"].to_list())
    rows = [{"example_id": e, "source": "sft", **r} for e, r in zip(train["example_id"], pairs)]
    blocks = document_rows(tokenizer, reading_texts(documents, sentence_passes), max_length)
    ids = [content_id("document", n, block["input_ids"]) for n, block in enumerate(blocks)]
    return rows + [{"example_id": i, "source": "document", **block} for i, block in zip(ids, blocks)]


def main(argv: list[str] | None = None) -> int:
    request = TeacherLogitsRequest.parse(argv, __doc__.splitlines()[0])
    return serve(request, lambda log: cache_teacher(request, log))


def cache_teacher(request: TeacherLogitsRequest, log) -> dict:
    import json
    import time

    from nexa_core.models.checkpoint import verify_checkpoint
    from nexa_core.models.load import load_for_eval
    from nexa_core.train.rows import read_documents, read_sft

    if request.expect_sha256:
        verify_checkpoint(request.teacher, json.loads(request.expect_sha256))
    settings = request.recipe()
    k, batch_size = settings.k, settings.batch_size
    train = read_sft(request.sft_uri, request.sft_version, request.domain)["train"]
    documents = (
        read_documents(request.documents_uri, request.documents_version, request.domain)
        if request.documents_uri and request.documents_version is not None
        else []
    )
    model, tokenizer = load_for_eval(request.teacher, "student", "false")  # fp32: the distributions as they are
    rows = distillation_rows(tokenizer, train, documents, settings.sentence_passes, settings.max_length)
    start = time.perf_counter()
    frame = pl.DataFrame(teacher_top_k(model, tokenizer, rows, k, batch_size, log), schema=TEACHER_LOGITS)
    write_atomically(Path(request.output), frame.write_parquet)
    return {
        "output": request.output,
        "examples": int((frame["source"] == "sft").sum()),
        "document_blocks": int((frame["source"] == "document").sum()),
        "tokens": int(frame["input_ids"].list.len().sum()),
        "k": k,
        "vocab_size": int(model.get_output_embeddings().weight.shape[0]),
        "seconds": round(time.perf_counter() - start, 2),
    }


if __name__ == "__main__":
    sys.exit(main())
