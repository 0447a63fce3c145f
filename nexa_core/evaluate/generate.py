"""Answer a domain's held-out SFT questions with a checkpoint and its base: `python -m nexa_core.evaluate.generate ...`.

Runs where train.py runs (a GPU node, or CPU for the tiny default student) and, when launched by
Dagster, reports through dagster-pipes. The student (base model + LoRA adapter) and its untrained
base model answer the same prompts, tokenised by the same tokenizer (the adapter folder's), with
greedy decoding by default, so the two can be scored side by side and a rerun gives the same
answers. All predictions go to one parquet file, renamed into place only when complete.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import polars as pl

from nexa_core.distill.recitation import final_answer, split_reply
from nexa_core.evaluate.answer_cache import CACHED_ROLES, AnswerCache, answers_key, tokenizer_digest
from nexa_core.evaluate.decoding import ROWS_PER_PASS, can_merge, exact_regrouping, merged_tokens
from nexa_core.files import write_atomically
from nexa_core.ids import content_id
from nexa_core.models.checkpoint import model_roles, present_roles, verify_checkpoint
from nexa_core.models.device import device_name, fit_threads, precision, torch_threads, use_bf16
from nexa_core.models.load import load_for_eval
from nexa_core.progress import Progress
from nexa_core.recipe import GenerateConfig
from nexa_core.schemas import EVAL_PREDICTIONS
from nexa_core.stage import GenerateRequest, serve
from nexa_core.train.rows import prompt_turns, read_sft

PREDICTIONS = {
    name: EVAL_PREDICTIONS[name]
    for name in (
        "model_role",
        "example_id",
        "topic",
        "question",
        "reference",
        "prediction",
        "recitation",
        "prompt_tokens",
        "new_tokens",
    )
}


def last_turn(messages: list[dict], role: str) -> str | None:
    return next((m["content"] for m in reversed(messages) if m["role"] == role), None)


def reference_answer(messages: list[dict]) -> str:
    """What a conversation's last reply answers: its final answer, without a recitation before it."""
    return final_answer(last_turn(messages, "assistant") or "")


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokenizer's eos ends a chat turn; the model's generation config may name more (e.g. Llama 3's
    <|eot_id|>), and setting eos_token_id ourselves would otherwise drop them."""
    model_ids = model.generation_config.eos_token_id
    model_ids = model_ids if isinstance(model_ids, list) else [model_ids]
    return sorted({tokenizer.eos_token_id, *model_ids} - {None})


def answer_length(tokens: list[int], stops: list[int]) -> int:
    """Generated tokens up to and including the first stop token; what follows is batch padding."""
    return next((i + 1 for i, token in enumerate(tokens) if token in stops), len(tokens))


def generate_answers(
    model,
    tokenizer,
    conversations: list[list[dict]],
    config: GenerateConfig,
    progress: Progress | None = None,
    fast: bool = True,
) -> list[dict]:
    """One {"prediction", "prompt_tokens", "new_tokens"} per conversation, in order; `progress` counts each batch
    and its new tokens. The prompts are asked in batches of `batch_size`, each left-padded to its longest prompt.
    Where it changes no token (decoding.can_merge: greedy, on a CPU whose products do not depend on their batch),
    several batches are decoded in one pass (nexa_core.evaluate.decoding), on threads fitted to the cores other
    processes leave free when answering starts (`threads`). `fast=False` answers batch by batch through
    model.generate on torch's threads, as before merged passes: the baseline bench/generate.py measures."""
    import torch
    from transformers import GenerationConfig, set_seed

    stops = stop_token_ids(model, tokenizer)
    generation = GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        min_new_tokens=config.min_new_tokens,
        do_sample=config.do_sample,
        num_beams=config.num_beams,
        repetition_penalty=config.repetition_penalty,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stops,
        cache_implementation=config.cache_implementation,
    )
    tokenizer.padding_side = "left"  # every prompt ends where its answer starts
    model.eval()
    set_seed(config.seed)  # a sampled run repeats too
    size = config.batch_size
    batches = [
        tokenizer.apply_chat_template(
            [prompt_turns(c) for c in conversations[start : start + size]],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            padding=True,
            return_tensors="pt",
        ).to(model.device)
        for start in range(0, len(conversations), size)
    ]
    default = torch.get_num_threads()
    exact = fast and exact_regrouping(model)
    threads = config.threads or default
    if exact and not config.threads and default > 1:  # fitted to the free cores only where that changes no answer
        fitted = fit_threads(0, default)
        threads = fitted if exact_regrouping(model, (fitted,)) else default
    merged = exact and can_merge(model, config)
    per_pass = max(1, ROWS_PER_PASS // size) if merged else 1
    answers = []
    with torch.inference_mode(), torch_threads(threads):
        for first in range(0, len(batches), per_pass):
            group = batches[first : first + per_pass]
            if merged:
                generated = merged_tokens(
                    model, group, config.max_new_tokens, config.min_new_tokens, stops, tokenizer.pad_token_id
                )
            else:
                width = group[0]["input_ids"].shape[1]
                generated = model.generate(**group[0], generation_config=generation)[:, width:].tolist()
            prompts = [n for batch in group for n in batch["attention_mask"].sum(dim=1).tolist()]
            new = []
            for prompt_tokens, tokens in zip(prompts, generated):
                n = answer_length(tokens, stops)
                new.append(
                    {
                        "prediction": tokenizer.decode(tokens[:n], skip_special_tokens=True).strip(),
                        "prompt_tokens": prompt_tokens,
                        "new_tokens": n,
                    }
                )
            answers += new
            if progress:
                progress.update(progress.done + len(group), sum(a["new_tokens"] for a in new))
    return answers


SPEED_DECODES = 3  # timed decodes of each model; its speed is their median


def decode_speed(model, tokenizer, conversations: list[list[dict]], config: GenerateConfig) -> float:
    """New tokens/s decoding exactly `speed_tokens` tokens for the first batch of prompts, the median of
    SPEED_DECODES decodes (one slowed by another process on the cores does not set the figure). Answers to a split
    stop at different lengths, and a model that stops early spends its time on prompts: a fixed length makes
    models comparable by what they cost per generated token."""
    n = config.speed_tokens
    batch = conversations[: config.batch_size]
    fixed = config.replace(max_new_tokens=n, min_new_tokens=n)
    seconds = []
    for _ in range(SPEED_DECODES):
        start = time.perf_counter()
        generate_answers(model, tokenizer, batch, fixed)
        seconds.append(time.perf_counter() - start)
    return len(batch) * n / statistics.median(seconds)


def predictions_frame(role: str, examples: pl.DataFrame, answers: list[dict]) -> pl.DataFrame:
    """One row per answer: its final answer is scored against the reference's, its recitation kept beside it."""
    rows = []
    for ex, answer in zip(examples.iter_rows(named=True), answers):
        recitation, prediction = split_reply(answer["prediction"])
        rows.append(
            {
                "model_role": role,
                "example_id": ex["example_id"],
                "topic": ex["topic"],
                "question": last_turn(ex["messages"], "user"),
                "reference": reference_answer(ex["messages"]),
                **answer,
                "prediction": prediction,
                "recitation": recitation,
            }
        )
    return pl.DataFrame(rows, schema=PREDICTIONS)


def main(argv: list[str] | None = None) -> int:
    args = GenerateRequest.parse(argv, __doc__.splitlines()[0])
    return serve(args, lambda log: answer(args, args.recipe(), log))


# settings that change no answer: left out of the answer cache's key
ANSWER_NEUTRAL = ("speed_tokens", "threads", "progress_seconds")


def cache_key(args: GenerateRequest, role: str, config: GenerateConfig, prompts: list[list[int]]) -> str | None:
    """The answer cache's key of a role's answers to these prompts (token ids); None for a model that is not a local
    folder."""
    items = content_id(prompts, tokenizer_digest(args.adapter), length=64)
    settings = {k: v for k, v in config.to_dict().items() if k not in ANSWER_NEUTRAL}
    return answers_key(config.stage, model_roles(args.adapter)[role], items, settings, precision(use_bf16(config.bf16)))


def prompt_ids(checkpoint: str, conversations: list[list[dict]]) -> list[list[int]]:
    """The prompts as every role's model sees them: token ids under the checkpoint's tokenizer and chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    return [
        tokenizer.apply_chat_template(prompt_turns(c), add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        for c in conversations
    ]


def answer(args: GenerateRequest, config: GenerateConfig, log) -> dict:
    """Each present role's answers to the split, in one parquet file; returns the run's summary. With an answer cache
    (args.answer_cache), the read and base roles' answers are read back where the same model answered the same prompts
    under the same settings before, and kept otherwise."""
    if args.expect_sha256:
        verify_checkpoint(args.adapter, json.loads(args.expect_sha256))
    examples = read_sft(args.sft_uri, args.sft_version, args.domain)[args.split]
    if examples.is_empty():
        raise ValueError(
            f"partition {args.domain}: the SFT {args.split} split at version {args.sft_version} "
            f"is empty; nothing to evaluate"
        )
    conversations = examples["messages"].to_list()
    frames, seconds, speed, cached = [], {}, {}, []
    roles = present_roles(args.adapter, args.roles, args.domain, log)
    batches = -(-len(conversations) // config.batch_size)
    progress = Progress(config.stage, args.domain, len(roles) * batches, log, config.progress_seconds, unit="batch")
    cache = AnswerCache(args.answer_cache) if args.answer_cache else None
    prompts = prompt_ids(args.adapter, conversations) if cache and set(roles) & set(CACHED_ROLES) else None
    for role in roles:
        start = time.perf_counter()
        key = cache_key(args, role, config, prompts) if prompts and role in CACHED_ROLES else None
        kept = cache.read(key, len(conversations)) if key else None
        if kept is not None:
            answers = kept.to_dicts()
            cached.append(role)
            progress.update(progress.done + batches)
        else:
            model, tokenizer = load_for_eval(args.adapter, role, config.bf16)
            # one short answer first: the process's one-time start-up is not charged to whichever role is timed first
            generate_answers(model, tokenizer, conversations[:1], config.replace(max_new_tokens=2))
            if config.speed_tokens:
                speed[role] = decode_speed(model, tokenizer, conversations, config)
            start = time.perf_counter()
            answers = generate_answers(model, tokenizer, conversations, config, progress)
            del model  # free its memory before the next role's model loads
            if key:
                cache.write(key, pl.DataFrame(answers, schema={k: PREDICTIONS[k] for k in answers[0]}))
        seconds[role] = round(time.perf_counter() - start, 3)
        how = f"read back from the answer cache ({key})" if kept is not None else "answered"
        log(f"partition {args.domain}: {role} {how} {len(answers)} {args.split} examples in {seconds[role]:.1f}s")
        frames.append(predictions_frame(role, examples, answers))
    predictions = pl.concat(frames)
    write_atomically(Path(args.output), predictions.write_parquet)
    summary = {
        "output": args.output,
        "rows": predictions.height,
        "roles": roles,
        "cached_roles": cached,
        "generation_config": config.to_dict(),
        "precision": precision(use_bf16(config.bf16)),
        "seconds": seconds,
        **({"speed": speed} if speed else {}),
        "examples": examples.height,
        "device": device_name(),
    }
    return summary


if __name__ == "__main__":
    sys.exit(main())
