"""Generation throughput: the three models' answers (student, read, base) to a domain's test split through
nexa_core.evaluate.generate, today's path against the fast one in the same run, and the answer cache on a rerun.

Usage: python bench/generate.py [--domain physics] [--base smollm2-135m-instruct|nexa-tiny-llama] [--checkpoint DIR]
                                [--train-steps 2] [--limit N] [--set KEY=YAML ...] [--shapes] [--examples FILE]
                                [--smoke]
       python bench/generate.py --base smollm2-135m-instruct    # the default student on the physics test split

Roles: --checkpoint names a checkpoint folder (a run's student_checkpoint); without one, the checkpoint is made
here by the stages' own functions (nexa_core.train.pretrain.read_corpus, then nexa_core.train.trainer.train) from
--base, --train-steps steps each: a real base gives the three roles (student, read, base), the config-built
nexa-tiny-llama two (its base is the model after reading). Briefly trained, its student and read answer much like
its base: this measures speed, and whether the answers are the same, not what was learnt. For each role, with the
model loaded once (load_for_eval, eval_predictions' precision):
- today: generate_answers(fast=False), the path before merged passes: batch by batch through model.generate, on
  torch's threads;
- fast: generate_answers as eval_predictions runs it: greedy batches merged into passes of up to 64 rows, each row
  with its own batch's attention, on threads fitted to the free cores.
new tokens/s counts each answer's tokens up to its stop token over the wall time; "same answers" compares every
answer's text and token counts. Then the stage function (nexa_core.evaluate.generate.answer) twice with an answer
cache: cold (every role answered, read and base kept), then as for a new checkpoint over the same read and base
(those two read back, the student answered). Every figure comes from this run; the load average says whether
other processes shared the cores.

--shapes (and --smoke) also run the older table: plain model.generate one prompt at a time against batched
generation, on a config-built model of bench/train.py's shapes with random weights (decoding speed, not answers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from corpus import load as load_corpus
from corpus import machine_line
from train import SHAPES


def one_at_a_time(model, tokenizer, conversations: list, max_new_tokens: int) -> int:
    """The baseline: one prompt per model.generate call, greedy, the same stop tokens. Returns tokens kept."""
    import torch

    from nexa_core.evaluate.generate import answer_length, stop_token_ids
    from nexa_core.train.rows import prompt_turns

    stops = stop_token_ids(model, tokenizer)
    kept = 0
    with torch.inference_mode():
        for conversation in conversations:
            batch = tokenizer.apply_chat_template(
                prompt_turns(conversation),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            ).to(model.device)
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )
            kept += answer_length(out[0, batch["input_ids"].shape[1] :].tolist(), stops)
    return kept


def timed(run) -> tuple[object, float]:
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = run()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def load_line() -> str:
    from nexa_core.models.device import free_cores

    free = free_cores(1.0)
    cores = "unknown" if free is None else f"{free:.1f} of {len(os.sched_getaffinity(0))}"
    return f"load average (1, 5, 15 min) {', '.join(f'{x:.2f}' for x in os.getloadavg())}; cores free over 1 s: {cores}"


def make_checkpoint(data: dict, base: str, steps: int, work: Path, domain: str) -> tuple[Path, str]:
    """A checkpoint made by the stages' own functions: `base` reads the domain's documents, then SFT on the train
    split, `steps` steps each, one sequence per step (throughput, not learning)."""
    import polars as pl

    from nexa_core.recipe import FinetuneConfig, ReadingConfig
    from nexa_core.train.pretrain import read_corpus
    from nexa_core.train.trainer import train

    quiet = lambda message: None  # noqa: E731
    short = {"max_steps": steps, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1, "save_steps": 1000}
    read = read_corpus(
        ReadingConfig.load(overrides=short | {"base_model": base}),
        data["documents"],
        work / "read",
        domain,
        ROOT / "data" / "artifacts" / "bases",  # a named base is converted once, as the graph does
        log=quiet,
    )
    splits = {
        name: pl.DataFrame({"messages": [r["messages"] for r in rows], "topic": [r["topic"] for r in rows]})
        for name, rows in data["splits"].items()
    }
    sft = FinetuneConfig.load(overrides=short | {"base_model": read["model_path"]})
    record = train(sft, splits, work / "sft", domain, log=quiet)
    folder = work / "sft" / ("model" if record["finetune"] == "full" else "adapter")
    return folder, f"{base} read {steps} steps, then {record['finetune']} SFT {steps} steps"


def sft_table(rows: list[dict], domain: str, folder: Path) -> str:
    """The test split as the SFT Delta table the stage function reads (version 0)."""
    import polars as pl

    from nexa_core.schemas import SFT_DATASET

    frame = pl.DataFrame(
        [
            dict.fromkeys(SFT_DATASET)
            | {"domain": domain, "split": "test", "example_id": r["example_id"], "pair_id": r["example_id"]}
            | {"doc_id": r["example_id"], "topic": r["topic"], "messages": r["messages"]}
            for r in rows
        ],
        schema=SFT_DATASET,
    )
    frame.write_delta(str(folder))
    return str(folder)


def both_paths(model, tokenizer, conversations: list, config) -> tuple[list, float, list, float]:
    """(today's answers, seconds, the fast path's answers, seconds) of one model, each path warmed up first."""
    from nexa_core.evaluate.generate import generate_answers

    for fast in (False, True):  # kernels, allocator, the fast path's product probe
        generate_answers(model, tokenizer, conversations[:1], config.replace(max_new_tokens=2), fast=fast)
    today, today_s = timed(lambda: generate_answers(model, tokenizer, conversations, config, fast=False))
    fast, fast_s = timed(lambda: generate_answers(model, tokenizer, conversations, config))
    return today, today_s, fast, fast_s


def roles_table(args, data: dict) -> None:
    from nexa_core.evaluate.generate import answer
    from nexa_core.models.checkpoint import present_roles
    from nexa_core.models.device import precision, use_bf16
    from nexa_core.models.load import load_for_eval
    from nexa_core.recipe import GenerateConfig
    from nexa_core.roles import CHECKPOINT_ROLES
    from nexa_core.stage import GenerateRequest, parse_sets

    work = Path(tempfile.mkdtemp(prefix="nexa-bench-generate-"))
    rows = data["splits"]["test"][: args.limit]
    conversations = [row["messages"] for row in rows]
    config = GenerateConfig.load(overrides=parse_sets(args.set))
    start = time.perf_counter()
    if args.checkpoint:
        checkpoint, made = Path(args.checkpoint), "given"
    else:
        checkpoint, made = make_checkpoint(data, args.base, args.train_steps, work, args.domain)
    roles = present_roles(checkpoint, CHECKPOINT_ROLES, args.domain, log=lambda message: None)
    print(
        f"checkpoint {checkpoint} ({made}, {time.perf_counter() - start:.0f} s); roles {', '.join(roles)}; "
        f"{len(conversations)} {args.domain} test questions; greedy, max {config.max_new_tokens} new tokens, batch "
        f"{config.batch_size}, {precision(use_bf16(config.bf16))}\n{load_line()}",
        flush=True,
    )
    header = f"{'role':12s} {'answers':>7s} {'new tokens':>10s} {'today s':>8s} {'tokens/s':>9s} {'fast s':>8s}"
    print(f"{header} {'tokens/s':>9s} {'x today':>8s} {'same answers':>12s}", flush=True)
    total = {"tokens": 0, "today": 0.0, "fast": 0.0, "same": 0, "answers": 0}
    for role in roles:
        model, tokenizer = load_for_eval(checkpoint, role, config.bf16)
        today, today_s, fast, fast_s = both_paths(model, tokenizer, conversations, config)
        del model
        tokens, same = sum(a["new_tokens"] for a in today), sum(a == b for a, b in zip(today, fast))
        print(
            f"{role:12s} {len(today):7d} {tokens:10d} {today_s:8.1f} {tokens / today_s:9.1f} {fast_s:8.1f} "
            f"{sum(a['new_tokens'] for a in fast) / fast_s:9.1f} {today_s / fast_s:7.2f}x {same:>7d}/{len(today)}",
            flush=True,
        )
        total = {
            "tokens": total["tokens"] + tokens,
            "today": total["today"] + today_s,
            "fast": total["fast"] + fast_s,
            "same": total["same"] + same,
            "answers": total["answers"] + len(today),
        }
    print(
        f"{'all roles':12s} {total['answers']:7d} {total['tokens']:10d} {total['today']:8.1f} "
        f"{total['tokens'] / total['today']:9.1f} {total['fast']:8.1f} {total['tokens'] / total['fast']:9.1f} "
        f"{total['today'] / total['fast']:7.2f}x {total['same']:>7d}/{total['answers']}   target 2x, all the same",
        flush=True,
    )
    request = GenerateRequest(
        domain=args.domain,
        adapter=str(checkpoint),
        sft_uri=sft_table(rows, args.domain, work / "sft_dataset"),
        sft_version=0,
        output=str(work / "eval" / "predictions.parquet"),
        roles=roles,
        answer_cache=str(work / "cache"),
    )
    for run in ("cold cache", "a new checkpoint over the same read and base"):
        summary = answer(request, config, log=lambda message: None)
        seconds = sum(summary["seconds"].values())
        print(
            f"stage function, {run}: roles answered {', '.join(r for r in roles if r not in summary['cached_roles'])}"
            f"; read back {', '.join(summary['cached_roles']) or 'none'}: {seconds:.1f} s, "
            f"{total['tokens'] / seconds:.1f} new tokens/s for the roles, {total['today'] / seconds:.2f}x today",
            flush=True,
        )
    print(load_line(), flush=True)


def shapes_table(args, data: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nexa_core.evaluate.generate import generate_answers
    from nexa_core.models.load import load_student
    from nexa_core.recipe import GenerateConfig
    from nexa_core.train.student import build_default_student

    test = [row["messages"] for row in data["splits"]["test"]]
    conversations = (test * (args.prompts // len(test) + 1))[: args.prompts]
    folder = build_default_student(
        [m["content"] for row in data["splits"]["train"] for m in row["messages"]],
        Path(tempfile.mkdtemp(prefix="nexa-bench-generate-")),
        seed=0,
        **SHAPES[args.shape],
    )
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    config = GenerateConfig.load(overrides={"max_new_tokens": args.max_new_tokens})
    # The baseline first, on the model as any transformers user loads it (load_student tunes the process)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    one_at_a_time(model, tokenizer, conversations[:2], args.max_new_tokens)  # warm-up: kernels, allocator
    print(
        f"{len(conversations)} prompts ({args.domain} test split), shape {args.shape}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, greedy, max {args.max_new_tokens} "
        f"new tokens\n{'run':44s} {'tokens':>7s} {'seconds':>8s} {'tokens/s':>9s} {'x base':>7s}",
        flush=True,
    )
    tokens, seconds = timed(lambda: one_at_a_time(model, tokenizer, conversations, args.max_new_tokens))
    base = tokens / seconds
    print(f"{'model.generate, one at a time':44s} {tokens:7d} {seconds:8.2f} {base:9.1f} {1:6.2f}x", flush=True)
    model, tokenizer = load_student(str(folder), dtype=dtype)
    model = model.to(device).eval()
    caches = [None, "static"] if cuda else [None]
    for cache in caches:
        run_config = config.replace(cache_implementation=cache)
        generate_answers(model, tokenizer, conversations[:2], run_config.replace(batch_size=2))  # warm-up
        for size in args.batch:
            answers, seconds = timed(
                lambda: generate_answers(model, tokenizer, conversations, run_config.replace(batch_size=size))
            )
            tokens = sum(a["new_tokens"] for a in answers)
            name = f"nexa_core.evaluate.generate, batch {size}" + (f", {cache} cache" if cache else "")
            print(
                f"{name:44s} {tokens:7d} {seconds:8.2f} {tokens / seconds:9.1f} {tokens / seconds / base:6.2f}x",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="physics")
    parser.add_argument("--base", default="smollm2-135m-instruct", help="the base the checkpoint is made from")
    parser.add_argument("--checkpoint", help="a checkpoint folder to answer with (default: one made here)")
    parser.add_argument("--train-steps", type=int, default=2, help="reading and SFT steps of the checkpoint made here")
    parser.add_argument("--limit", type=int, help="the first N test questions (default: all)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML", help="generate_default.yaml overrides")
    parser.add_argument("--shapes", action="store_true", help="also the one-at-a-time table on random weights")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--max-new-tokens", type=int, default=64, help="of the shapes table")
    parser.add_argument("--examples", help="the domain's data as JSON (bench/corpus.py): read if present, else written")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="nexa-tiny-llama, 8 questions, 8 new tokens, batch 3; the shapes table at 8 prompts, batches 1 and 4",
    )
    args = parser.parse_args()
    if args.smoke:
        args.base, args.limit, args.set = "nexa-tiny-llama", 8, [*args.set, "max_new_tokens=8", "batch_size=3"]
        args.shapes, args.shape, args.prompts, args.batch, args.max_new_tokens = True, "tiny", 8, [1, 4], 8
    print(machine_line(), flush=True)
    data = load_corpus(args.domain, args.examples)
    roles_table(args, data)
    if args.shapes:
        shapes_table(args, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
