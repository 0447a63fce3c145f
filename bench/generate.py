"""Generation throughput: nexa_core.evaluate.generate (batched, left-padded, greedy) against plain model.generate one
prompt at a time, same model, same prompts, same decoding.

Usage: python bench/generate.py [--domain physics] [--shape tiny|0.5b] [--prompts 128] [--batch 1 16 64]
                                [--max-new-tokens 64] [--examples FILE] [--smoke]

The model is the default student's architecture built from a config with random weights (bench/train.py's
shapes), in bf16 on CUDA and fp32 on CPU; the prompts are the domain's test-split questions in the chat
template (bench/corpus.py). tokens/s counts generated tokens up to and including each answer's stop token
(what nexa_core.evaluate.generate keeps), over the wall time of all prompts. Random weights rarely stop early, so most
answers run to --max-new-tokens: this measures decoding speed, not answers.
"""

from __future__ import annotations

import argparse
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


def timed(run) -> tuple[int, float]:
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = run()
    if cuda:
        torch.cuda.synchronize()
    return tokens, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="physics")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--examples", help="the domain's data as JSON (bench/corpus.py): read if present, else written")
    parser.add_argument("--smoke", action="store_true", help="tiny shape, 8 prompts, batches 1 and 4, 8 new tokens")
    args = parser.parse_args()
    if args.smoke:
        args.shape, args.prompts, args.batch, args.max_new_tokens = "tiny", 8, [1, 4], 8
    print(machine_line(), flush=True)
    import torch

    from nexa_core.evaluate.generate import generate_answers
    from nexa_core.models.load import load_student
    from nexa_core.recipe import GenerateConfig
    from nexa_core.train.student import build_default_student

    data = load_corpus(args.domain, args.examples)
    test = [row["messages"] for row in data["splits"]["test"]]
    conversations = (test * (args.prompts // len(test) + 1))[: args.prompts]
    folder = build_default_student(
        [m["content"] for row in data["splits"]["train"] for m in row["messages"]],
        Path(tempfile.mkdtemp(prefix="nexa-bench-generate-")),
        seed=0,
        **SHAPES[args.shape],
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
            tokens, seconds = timed(
                lambda: sum(
                    a["new_tokens"]
                    for a in generate_answers(model, tokenizer, conversations, run_config.replace(batch_size=size))
                )
            )
            name = f"nexa_core.evaluate.generate, batch {size}" + (f", {cache} cache" if cache else "")
            print(
                f"{name:44s} {tokens:7d} {seconds:8.2f} {tokens / seconds:9.1f} {tokens / seconds / base:6.2f}x",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
