"""The trainer's data: the SFT set and the domain's documents read at a pinned Delta version, and each turned
into token rows (input_ids + labels) of the length the trainer packs them to."""

from __future__ import annotations

from nexa_core.schemas import SFT_SPLITS
from nexa_core.teacher.question_forms import split_sentences
from nexa_core.train.start import TrainingError


def read_sft(uri: str, version: int, domain: str, storage_options: dict | None = None):
    import polars as pl

    frame = (
        pl.scan_delta(uri, version=version, storage_options=storage_options)
        .filter(pl.col("domain") == domain)
        .collect()
    )
    return {split: frame.filter(pl.col("split") == split) for split in SFT_SPLITS}


def read_documents(uri: str, version: int, domain: str, storage_options: dict | None = None) -> list[str]:
    """The domain's raw document texts at a pinned Delta version, in a stable order."""
    import polars as pl

    return (
        pl.scan_delta(uri, version=version, storage_options=storage_options)
        .filter(pl.col("domain") == domain)
        .sort("doc_id")
        .collect()["text"]
        .to_list()
    )


def prompt_turns(messages: list[dict]) -> list[dict]:
    """The conversation up to the answer the model is asked to give."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def chat_tokens(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
        )["input_ids"]
    )


def conversation_rows(tokenizer, conversations: list[list[dict]]) -> list[dict]:
    """Each conversation as prompt/completion token ids: the loss falls on the final assistant turn as the
    template renders it (answer and end-of-turn). Works with any chat template, with or without
    {% generation %} markers, because the prompt is rendered on its own and must be a prefix."""
    rows = []
    for messages in conversations:
        prompt = chat_tokens(tokenizer, prompt_turns(messages), add_generation_prompt=True)
        full = chat_tokens(tokenizer, messages)
        if full[: len(prompt)] != prompt or len(full) == len(prompt):
            raise TrainingError(
                "the chat template does not render the prompt (add_generation_prompt=True) as a prefix "
                "of the whole conversation, so the answer tokens cannot be found; use a template "
                f"that does (first conversation that failed: {str(messages)[:200]})"
            )
        rows.append({"input_ids": full, "labels": [-100] * len(prompt) + full[len(prompt) :]})
    return rows


SENTENCES_PER_TEXT = 6  # a shuffled pass is cut into texts of this many sentences


def reading_texts(documents: list[str], sentence_passes: int, seed: int = 0) -> list[str]:
    """What the student reads: every document whole, then `sentence_passes` passes over all of the
    domain's sentences, each pass in a fresh seeded order. A fact read only inside its document is
    tied to the words before it there: in a question it is not recalled (measured: the next word of a
    read sentence quoted inside a prompt, 12 of 60 after reading documents and lone sentences). Read
    after ever different sentences it is tied to its own words (37 of 60)."""
    import random

    texts = list(documents)
    sentences = [s for doc in documents for s in split_sentences(doc) if len(s.split()) >= 4]
    for n in range(int(sentence_passes)):
        order = sentences[:]
        random.Random(f"{seed}:{n}").shuffle(order)
        texts += [" ".join(order[i : i + SENTENCES_PER_TEXT]) for i in range(0, len(order), SENTENCES_PER_TEXT)]
    return texts


def document_rows(tokenizer, texts: list[str], block_size: int) -> list[dict]:
    """Raw documents as causal LM rows of at most block_size tokens, every token in the loss."""
    head = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    rows = []
    for text in texts:
        ids = head + tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows += [
            {"input_ids": ids[i : i + block_size], "labels": ids[i : i + block_size]}
            for i in range(0, len(ids), block_size)
        ]
    return rows


# Attention that runs packed documents each on its own (varlen kernels, or flex attention's block mask)
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")


def packing_length(lengths: list[int], cap: int, varlen_attention: bool) -> int:
    """Length of a packed row. With varlen (flash) attention packed documents cost what they would
    alone, so rows are as long as allowed. Without it (SDPA/eager, CPU) documents are still kept apart (TRL packs
    padding-free with each document's own positions, and transformers masks across the boundaries), but the
    attention is computed over the whole row, so rows are the shortest power of two that holds the longest
    example: nothing is truncated and little is spent on masked attention."""
    if varlen_attention or not lengths:
        return cap
    longest = max(lengths)
    return min(cap, max(64, 1 << (longest - 1).bit_length()))


# A step's rows are taken from windows of this many batches sorted by length, as transformers' LengthGroupedSampler
# does: little padding, and the order within a pass stays random
LENGTH_WINDOW = 50


def passes(rows: list[dict], epochs: float, batch_size: int, seed: str) -> list[dict]:
    """`epochs` passes over `rows` (a fraction: that share of one more pass), each in a fresh seeded order, its
    batches of similar lengths: rows sorted by length within windows of LENGTH_WINDOW batches, the batches shuffled."""
    import random

    out: list[dict] = []
    whole, part = int(epochs), epochs - int(epochs)
    for n in range(whole + (part > 0)):
        rng = random.Random(f"{seed}:{n}")
        order = rows[:]
        rng.shuffle(order)
        if n == whole:
            order = order[: round(part * len(order))]
        window = LENGTH_WINDOW * batch_size
        grouped = [
            sorted(order[i : i + window], key=lambda r: len(r["input_ids"]), reverse=True)
            for i in range(0, len(order), window)
        ]
        batches = [g[i : i + batch_size] for g in grouped for i in range(0, len(g), batch_size)]
        rng.shuffle(batches)
        out += [row for batch in batches for row in batch]
    return out


def training_order(phases: list[tuple[str, list[dict], float]], batch_size: int, seed: int) -> tuple[list, list]:
    """The rows in the order they are trained, phase after phase ((name, rows, epochs) each, e.g. the QA pairs alone,
    then the pairs mixed with the documents: pre-instruction-tuning), and a summary of each phase."""
    ordered, summary = [], []
    for name, rows, epochs in phases:
        if not rows or epochs <= 0:
            continue
        taken = passes(rows, epochs, batch_size, f"{seed}:{name}")
        ordered += taken
        summary.append(
            {"phase": name, "epochs": epochs, "rows": len(taken), "tokens": sum(len(r["input_ids"]) for r in taken)}
        )
    return ordered, summary
