"""A roofline for every compute stage: this machine's GEMM rate at the student's own shapes, then reading, SFT, KD
and generation run at a fixed size through the project's own code, each against that rate.

Usage: python bench/roofline.py [--base smollm2-135m-instruct] [--steps 8] [--batches 2] [--threads N] [--smoke]

- The machine: the CPU by name with its bf16 flags (amx_bf16, avx512_bf16), its cores and torch's threads, or the GPU.
- GEMMs: bf16 and fp32 TFLOP/s of every matrix product of the student's forward pass (q/o and k/v projections, MLP,
  LM head) at the tokens one step feeds (batch x length as the stages use them: reading 16 x 64, SFT 16 x 128 for
  a pretrained base; a decode step of generation is one token per prompt of the batch), and what a forward pass
  would reach if each GEMM ran at its own rate. The roof each stage is held against is the rate of its largest
  body GEMM (the MLP up projection) at its own tokens per step (generation: the prompts of its first batch) and
  precision: the 0.5 s probe the stages themselves run for their records (nexa_core/models/speed.py gemm_roof).
- Stages, each through the project's code: reading is nexa_core.train.pretrain.read_corpus (the student_base
  stage's body: load, rows, fit, commit), SFT nexa_core.train.trainer.train on the domain's QA pairs (from the read
  model), KD nexa_core.train.kd's layer ranking, pruning, distill_steps over the teacher's cached top-k (the SFT
  model is the teacher; its top-k made by nexa_core.train.teacher_logits.teacher_top_k beforehand, not timed) and
  its commit, generation nexa_core.evaluate.generate.generate_answers on the test split with the SFT model (as it
  decodes today: model.generate batch by batch, or several batches in one pass where that changes no answer).
  Every setting is the stage's YAML default but the number of steps (--steps) and, for generation, of batches.
- Per stage: tokens/s (real tokens, no padding; new tokens for generation), model FLOP/s (nexa_core/models/speed.py:
  2 x body parameters per token forward, x3 to train, causal attention pairs included, the LM head counted only where
  it is computed: at labelled positions under this project's CompletionSFTTrainer on a CPU, every position in KD,
  once per new token in generation), MFU = model FLOP/s over the roof, padding share (pad tokens over all fed;
  in generation the positions its forward passes computed for the left padding and for answers already finished
  while others in their pass go on), and the time outside the
  model: inside the fit its evaluations and trainer saves (timed by the trainer's callbacks) and the rest of it
  (collation, logging, the trainer's set-up: the fit's wall minus its optimizer steps, evaluations and saves), and
  around it (load, rows, the final commit); for KD and generation the stage's wall minus the time in the training
  steps or in the model's forward passes (hooks on the model, whatever decoding loop calls it).
- Next to each figure, where issue 30 names one, its baseline: the GEMM and FLOP/s figures measured on an AMD EPYC
  with avx512_bf16 and no AMX, 2 threads; the targets (training at 50% of the bf16 GEMM rate; generation at twice
  this run's new tokens/s).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from corpus import load as load_corpus
from corpus import machine_line

SMOKE_STUDENT = {"hidden_size": 64, "layers": 2, "heads": 2, "vocab_size": 1024}
# issue 30's figures, measured on a 2-core AMD EPYC with avx512_bf16, no AMX
BASELINES = {
    "gemm": "bf16 2048x2048 0.16-0.3 TFLOP/s (EPYC, 2 threads)",
    "reading": "0.10 TFLOP/s (trainer total_flos, EPYC); target MFU >= 50%",
    "SFT": "0.10 TFLOP/s (trainer total_flos, EPYC); target MFU >= 50%",
    "KD": "target MFU >= 50%",
    "generation": "target 2x this run's new tokens/s",
}


def machine_text() -> str:
    import torch

    from nexa_core.models.speed import cpu_text

    gpu = f"gpu: {torch.cuda.get_device_name(0)}; " if torch.cuda.is_available() else ""
    return f"{gpu}cpu: {cpu_text()}, {os.cpu_count()} cores"


def print_gemms(shape, steps: dict[str, int], seconds: float) -> None:
    """Each forward GEMM's rate in bf16 and fp32 at each stage's tokens per step, and a forward pass at those rates."""
    from nexa_core.models.speed import gemm_rate

    print(f"\nGEMM TFLOP/s at the student's shapes (each product run for {seconds} s; baseline {BASELINES['gemm']})")
    print(f"{'tokens per step':26s} {'GEMM (m x k x n)':34s} {'bf16':>7s} {'fp32':>7s}")
    for what, tokens in steps.items():
        totals = {True: [0.0, 0.0], False: [0.0, 0.0]}  # flops, seconds
        for name, m, k, n, count in shape.forward_gemms(tokens):
            rates = {bf16: gemm_rate(m, k, n, bf16, seconds) for bf16 in (True, False)}
            for bf16, rate in rates.items():
                totals[bf16][0] += 2 * m * k * n * count
                totals[bf16][1] += 2 * m * k * n * count / rate
            print(f"{what:26s} {name + f' ({m}x{k}x{n})':34s} {rates[True] / 1e12:7.3f} {rates[False] / 1e12:7.3f}")
        forward = {bf16: f / s / 1e12 for bf16, (f, s) in totals.items()}
        print(f"{what:26s} {'a forward pass, GEMMs only':34s} {forward[True]:7.3f} {forward[False]:7.3f}")
    rate = gemm_rate(2048, 2048, 2048, True, seconds)
    print(f"{'(issue 30 baseline shape)':26s} {'bf16 2048x2048x2048':34s} {rate / 1e12:7.3f}")


def reading(args, data: dict, work: Path, bases: Path) -> tuple[dict, float]:
    from nexa_core.recipe import ReadingConfig
    from nexa_core.train.pretrain import read_corpus

    overrides = {"base_model": args.base, "max_steps": args.steps}
    if args.smoke:
        overrides["student"] = SMOKE_STUDENT
    settings = ReadingConfig.load(overrides=overrides)
    start = time.perf_counter()
    record = read_corpus(settings, data["documents"], work / "read", args.domain, bases, log=lambda m: None)
    return record, time.perf_counter() - start


def sft(args, data: dict, work: Path, base: str) -> tuple[dict, float]:
    import polars as pl

    from nexa_core.recipe import FinetuneConfig
    from nexa_core.train.checkpoints import artifact_uri
    from nexa_core.train.trainer import train

    settings = FinetuneConfig.load(overrides={"base_model": base, "max_steps": args.steps})
    splits = {
        name: pl.DataFrame({"messages": [row["messages"] for row in data["splits"][name]]})
        for name in ("train", "validation")
    }
    start = time.perf_counter()
    record = train(settings, splits, work / "sft", args.domain, log=lambda m: None, documents=data["documents"])
    return {**record, "path": artifact_uri(str(work / "sft"), record["finetune"])}, time.perf_counter() - start


def kd(args, data: dict, work: Path, teacher_dir: str) -> tuple[dict, float]:
    """The KD stage's training on the teacher's top-k of the SFT pairs and document blocks (made first, not timed):
    the teacher's layers ranked, the pruned copy trained --steps steps, committed."""
    import polars as pl

    from nexa_core.models.device import use_bf16
    from nexa_core.models.load import load_for_eval
    from nexa_core.recipe import DistillConfig, TeacherLogitsConfig
    from nexa_core.train import kd as stage
    from nexa_core.train.teacher_logits import distillation_rows, teacher_top_k

    settings, cache = DistillConfig.defaults(), TeacherLogitsConfig.defaults()
    teacher, tokenizer = load_for_eval(teacher_dir, "student", "false")
    train = pl.DataFrame(data["splits"]["train"]).select("example_id", "messages")
    rows = distillation_rows(tokenizer, train, data["documents"], cache.sentence_passes, cache.max_length)
    random.Random(settings.seed).shuffle(rows)  # pairs and document blocks in every batch, as the stage has them
    rows = rows[: args.steps * settings.per_device_train_batch_size]
    rows = teacher_top_k(teacher, tokenizer, rows, cache.k, cache.batch_size, log=lambda m: None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches, topk = stage.cached_batches(rows, settings.per_device_train_batch_size, pad_id)
    bf16 = use_bf16(settings.bf16)
    start = time.perf_counter()
    importance = stage.layer_importance(teacher, batches[: settings.importance_batches])
    student = stage.prune_layers(teacher, stage.layers_to_keep(importance, settings.keep_layers, settings.keep_ratio))
    trained = time.perf_counter()
    hyper = (settings.learning_rate, settings.alpha, settings.temperature, settings.kind, settings.beta, bf16)
    losses = stage.distill_steps(student, batches, topk, len(batches), *hyper, log=lambda m: None)
    seconds = time.perf_counter() - trained
    speed = stage.kd_speed(student, batches, len(losses), seconds, bf16)
    record = {"steps": len(losses), "model_seconds": seconds, **speed}
    stage.commit_model(student, tokenizer, work / "kd" / "model", {"final_loss": losses[-1]})
    return record, time.perf_counter() - start


def watch_forwards(model) -> dict:
    """The seconds spent in the model's forward passes and the positions they computed (input_ids of every pass,
    padding included), whatever loop calls them (model.generate, or merged passes of several batches)."""
    seen, began = {"seconds": 0.0, "positions": 0}, []

    def before(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen["positions"] += 0 if ids is None else ids.numel()
        began.append(time.perf_counter())

    def after(module, args, kwargs, output):
        seen["seconds"] += time.perf_counter() - began.pop()

    model.register_forward_pre_hook(before, with_kwargs=True)
    model.register_forward_hook(after, with_kwargs=True)
    return seen


def generation(args, data: dict, teacher_dir: str) -> tuple[dict, float]:
    """generate_answers on --batches batches of the test split, its model's forward passes timed and counted."""
    from nexa_core.evaluate.generate import generate_answers
    from nexa_core.models.device import use_bf16
    from nexa_core.models.load import load_for_eval
    from nexa_core.models.speed import ModelShape, gemm_roof, speed_figures
    from nexa_core.recipe import GenerateConfig

    config = GenerateConfig.load(overrides={"max_new_tokens": 8} if args.smoke else None)
    size = config.batch_size
    rows = (data["splits"]["test"] * args.batches * size)[: args.batches * size]
    start = time.perf_counter()
    model, tokenizer = load_for_eval(teacher_dir, "student", config.bf16)
    seen = watch_forwards(model)
    answers = generate_answers(model, tokenizer, [row["messages"] for row in rows], config)
    wall = time.perf_counter() - start
    prompts, new = [a["prompt_tokens"] for a in answers], [a["new_tokens"] for a in answers]
    useful = sum(prompts) + sum(max(n - 1, 0) for n in new)  # each prompt, and each new token fed back but the last
    shape = ModelShape.of(model)
    flops = shape.generation_flops(prompts, new)
    # the roof at the first batch's prompts: what the machine does at the model's width; decode steps of one token
    # per prompt run far below it (the GEMM table's decode row)
    roof = gemm_roof(sum(prompts[:size]), shape.hidden, shape.intermediate, use_bf16(config.bf16))
    figures = speed_figures(flops, sum(new), seen["seconds"], roof)
    return {
        **figures,
        "steps": args.batches,
        "model_seconds": seen["seconds"],
        "padding_share": 1 - useful / seen["positions"],
        "new_tokens": sum(new),
    }, wall


def stage_line(name: str, record: dict, wall: float) -> str:
    """One stage's figures; the time outside the model split into the fit's evaluations, its trainer saves, the
    rest of the fit (collation, logging, the trainer's set-up) and what is around the fit (load, rows, commit)."""
    fit = record.get("wall_seconds", record["model_seconds"])  # generation and KD: all of it is the model's
    inside = record.get("outside_seconds", 0.0)
    evals, saves = record.get("eval_seconds", 0.0), record.get("save_seconds", 0.0)
    around = wall - fit
    outside = inside + around
    return (
        f"{name:11s} {record['steps']:5d} {wall:8.1f} {record['tokens_per_second']:9.1f} "
        f"{record['model_tflops']:8.3g} {record['gemm_tflops']:7.3g} {100 * record['mfu']:6.1f}% "
        f"{100 * record['padding_share']:6.1f}% {outside:7.1f} ({100 * outside / wall:3.0f}%) "
        f"{evals:6.1f} {saves:6.1f} {inside - evals - saves:6.1f} {around:6.1f}   {BASELINES[name]}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m-instruct", help="the student: a named base, a folder")
    parser.add_argument("--steps", type=int, default=8, help="training steps of reading, SFT and KD")
    parser.add_argument("--batches", type=int, default=2, help="batches of test questions answered")
    parser.add_argument("--threads", type=int, help="torch's threads (default: torch's own choice)")
    parser.add_argument("--domain", default="physics")
    parser.add_argument("--examples", help="the domain's data as JSON (bench/corpus.py): read if present, else written")
    parser.add_argument("--smoke", action="store_true", help="the config-built tiny student, 2 steps, 1 batch")
    args = parser.parse_args()
    if args.smoke:
        args.base, args.steps, args.batches = "nexa-tiny-llama", 2, 1
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    print(machine_text(), flush=True)
    from nexa_core.models.load import load_student
    from nexa_core.models.speed import ModelShape
    from nexa_core.recipe import FinetuneConfig, ReadingConfig

    data = load_corpus(args.domain, args.examples)
    if args.smoke:
        data["splits"]["train"] = data["splits"]["train"][:16]
    work = Path(tempfile.mkdtemp(prefix="nexa-bench-roofline-"))
    bases = ROOT / "data" / "artifacts" / "bases"
    stages = {}
    stages["reading"] = reading(args, data, work, bases)
    read_model = stages["reading"][0]["model_path"]
    stages["SFT"] = sft(args, data, work, read_model)
    sft_model = stages["SFT"][0]["path"]
    stages["KD"] = kd(args, data, work, sft_model)
    stages["generation"] = generation(args, data, sft_model)

    built = args.base == "nexa-tiny-llama"
    read, tune = (config.defaults().for_student(built) for config in (ReadingConfig, FinetuneConfig))
    steps = {
        f"reading {read.per_device_train_batch_size} x {read.max_length}": read.per_device_train_batch_size
        * read.max_length,
        f"SFT {tune.per_device_train_batch_size} x {tune.max_length}": tune.per_device_train_batch_size
        * tune.max_length,
        "a decode step of 16 prompts": 16,
    }
    model, _ = load_student(read_model)
    shape = ModelShape.of(model)
    print(
        f"\nstudent {args.base}: hidden {shape.hidden}, intermediate {shape.intermediate}, {shape.layers} layers, "
        f"{shape.heads}/{shape.kv_heads} heads, vocabulary {shape.vocab}, {shape.body_parameters / 1e6:.1f}M "
        f"parameters outside the embedding"
    )
    print_gemms(shape, steps, 0.1 if args.smoke else 0.5)
    print(
        f"\n{'stage':11s} {'steps':>5s} {'seconds':>8s} {'tokens/s':>9s} {'TFLOP/s':>8s} {'roof':>7s} {'MFU':>7s} "
        f"{'padding':>7s} {'outside the model':>17s} {'evals':>6s} {'saves':>6s} {'other':>6s} {'around':>6s}   "
        "baseline (issue 30)"
    )
    for name, (record, wall) in stages.items():
        print(stage_line(name, record, wall), flush=True)
    print(
        "tokens/s: real tokens trained (generation: new tokens); TFLOP/s: model FLOPs per second of the stage's "
        "training (generation: of its forward passes);\nroof: the stage's MLP GEMM at its tokens per step and "
        "precision; outside the model, seconds: evals and saves inside the fit, other: the rest of the fit "
        "(collation, logging, the trainer's set-up), around the fit (load, rows, the final commit)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
