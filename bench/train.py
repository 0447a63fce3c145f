"""Training throughput: this project's trainer configuration against plain TRL SFTTrainer defaults.

Usage: python bench/train.py [--domain physics] [--repeat 8] [--epochs 1]
       python bench/train.py --shape 0.5b [--full-finetune] --peak-tflops 989   # on an H100 (bf16 dense)

Both runs use the same model (the offline default student, built from a config with a tokenizer
trained on the corpus), the same LoRA config (or none with --full-finetune) and the same SFT examples (the domain's sample corpus
through the distillation stages, the train split repeated --repeat times), one process each.
tokens/s counts real (non-padding) tokens: epochs x tokens of the tokenized examples / train time.
MFU = 6 x parameters x tokens/s / peak, where peak is measured here with a large fp32 matmul
(CPU) or taken from the GPU's dense bf16 spec (--peak-tflops).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sft_examples(domain: str) -> list:
    from nexa_core.documents import load_domain
    from nexa_core.filters import filter_pairs
    from nexa_core.prompts import load_template
    from nexa_core.sft import build_sft_dataset
    from nexa_core import schemas
    from nexa_core.teacher import HeuristicTeacher, collect_responses
    from nexa_core.teacher_inputs import build_teacher_inputs

    docs, _ = load_domain(ROOT / "data" / "raw", domain)
    inputs = build_teacher_inputs(docs, load_template("qa_pairs_v1"))
    outputs, _ = collect_responses(inputs, HeuristicTeacher(), lambda h: schemas.empty(schemas.TEACHER_CACHE),
                                   lambda rows: None)
    sft = build_sft_dataset(filter_pairs(outputs, inputs))
    return sft.filter(sft["split"] == "train")["messages"].to_list()


def measured_peak_flops() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    start, n = time.perf_counter(), 10
    for _ in range(n):
        torch.mm(a, b)
    return 2 * 2048 ** 3 * n / (time.perf_counter() - start)


# Model shapes: the offline default, and a Llama with a Qwen2-0.5B-shaped body (24 x 896, GQA 14/2; random
# weights: throughput only). The vocabulary is the corpus tokenizer's, so it has ~0.36B parameters, not 0.49B.
SHAPES = {"tiny": {}, "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "layers": 24, "heads": 14,
                               "kv_heads": 2, "vocab_size": 32000}}


def run_one(mode: str, model_dir: str, data_file: str, epochs: int, peak: float, full: bool) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from nexa_core.student import LORA_TARGETS, load_student
    from nexa_core.train import load_config, packing_length, token_lengths

    messages = json.loads(Path(data_file).read_text())
    model, tokenizer = load_student(model_dir)
    cfg = load_config()
    lora = LoraConfig(r=cfg["lora"]["r"], lora_alpha=cfg["lora"]["alpha"], lora_dropout=cfg["lora"]["dropout"],
                      target_modules=LORA_TARGETS["llama"], task_type="CAUSAL_LM")
    out = tempfile.mkdtemp()
    common = dict(output_dir=out, num_train_epochs=epochs, report_to=[], save_strategy="no", logging_steps=50,
                  disable_tqdm=True, use_cpu=not torch.cuda.is_available(), seed=0)
    if mode == "nexa":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        # The trainer's own rule for the packed row length (no flash attention here unless CUDA has it).
        length = packing_length(token_lengths(tokenizer, messages), cfg["max_length"], False)
        args = SFTConfig(**common, max_length=length, packing=True, assistant_only_loss=True,
                         per_device_train_batch_size=cfg["per_device_train_batch_size"],
                         learning_rate=cfg["learning_rate"], bf16=bf16)
    else:
        args = SFTConfig(**common)  # TRL's defaults otherwise
    dataset = datasets.Dataset.from_dict({"messages": messages})
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=None if full else lora)
    real_tokens = sum(len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"])
                      for m in messages) * epochs
    result = trainer.train()
    seconds = result.metrics["train_runtime"]
    params = sum(p.numel() for p in trainer.model.parameters())
    tps = real_tokens / seconds
    return {"mode": mode, "tokens": real_tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tps),
            "steps": trainer.state.global_step, "params": params, "mfu": 6 * params * tps / peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", default="physics")
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, help="GPU dense bf16 peak; default: measured fp32 matmul peak")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--full-finetune", action="store_true", help="train all weights instead of LoRA")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        mode, model_dir, data_file = args.one
        peak = args.peak_tflops * 1e12 if args.peak_tflops else measured_peak_flops()
        print(json.dumps(run_one(mode, model_dir, data_file, args.epochs, peak, args.full_finetune)
                         | {"peak_flops": peak}))
        return

    from nexa_core.student import build_default_student

    work = Path(tempfile.mkdtemp())
    messages = sft_examples(args.domain) * args.repeat
    (work / "data.json").write_text(json.dumps(messages))
    build_default_student([m["content"] for msgs in messages for m in msgs], work / "student", **SHAPES[args.shape])
    rows = {}
    for mode in ("nexa", "trl-defaults"):
        cmd = [sys.executable, __file__, "--epochs", str(args.epochs), "--one", mode, str(work / "student"),
               str(work / "data.json")] + (["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []) \
            + (["--full-finetune"] if args.full_finetune else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        r = rows[mode]
        print(f"{mode:13s} {len(messages)} examples  {r['tokens']} tokens  {r['steps']} steps  {r['seconds']:7.2f} s  "
              f"{r['tokens_per_s']:>8} tokens/s  MFU {100 * r['mfu']:.2f}% of {r['peak_flops'] / 1e9:.0f} GFLOP/s",
              flush=True)
    print(f"ratio: {rows['nexa']['tokens_per_s'] / rows['trl-defaults']['tokens_per_s']:.2f}x tokens/s")


if __name__ == "__main__":
    main()
