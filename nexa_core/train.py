"""Fine-tune a student on one domain's SFT set: `python -m nexa_core.train ...`.

Runs standalone on a GPU node with torch/transformers/trl/peft/polars/deltalake and, when launched by
Dagster, dagster-pipes (logs, metrics and the checkpoint record go back through Pipes). It reads the
SFT set at the exact Delta version it is given, trains TRL's SFTTrainer with a PEFT LoRA config, and
resumes from the last trainer checkpoint in the output folder when an earlier run was interrupted.
The final adapter is written to a temporary folder and renamed into place with its manifest, so a
half-written checkpoint is never taken for a finished one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"
MANIFEST = "manifest.json"
ERROR_FILE = "error.txt"  # the reason a run failed, for a launcher that only sees an exit code


class TrainingError(ValueError):
    pass


def load_config(path: Path | None = None, overrides: dict | None = None) -> dict:
    config = yaml.safe_load(Path(path or CONFIG_DIR / "train_default.yaml").read_text())
    for key, value in (overrides or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def sha256_files(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        out[str(path.relative_to(folder))] = digest.hexdigest()
    return out


def packing_length(lengths: list[int], cap: int, varlen_attention: bool) -> int:
    """Length of a packed row. With varlen (flash) attention packed documents cost what they would
    alone, so rows are as long as allowed. Without it (SDPA/eager, CPU) a packed row pays attention
    over its whole length, so rows are the shortest power of two that holds the longest example:
    nothing is truncated and little is spent on cross-document attention."""
    if varlen_attention or not lengths:
        return cap
    longest = max(lengths)
    return min(cap, max(64, 1 << (longest - 1).bit_length()))


def token_lengths(tokenizer, conversations: list) -> list[int]:
    return [len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"]) for m in conversations]


def read_sft(uri: str, version: int, domain: str, storage_options: dict | None = None):
    import polars as pl

    frame = pl.scan_delta(uri, version=version, storage_options=storage_options).filter(
        pl.col("domain") == domain).collect()
    return {split: frame.filter(pl.col("split") == split) for split in ("train", "validation", "test")}


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete trainer checkpoint: trainer_state.json is written last, so a folder
    without it was cut off mid-save and is skipped."""
    done = [p for p in Path(run_dir).glob("checkpoint-*") if (p / "trainer_state.json").is_file()] \
        if Path(run_dir).is_dir() else []
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def train(config: dict, splits: dict, out_dir: Path, domain: str, log=print, on_metrics=None) -> dict:
    """Train and save; return the checkpoint record (without the artifact-level fields)."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import EarlyStoppingCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from nexa_core.student import DEFAULT_STUDENT, build_default_student, load_student, lora_targets

    train_rows = splits["train"]
    if train_rows.height < config["min_train_examples"]:
        raise TrainingError(f"partition {domain}: the SFT train split has {train_rows.height} examples, fewer than "
                            f"min_train_examples={config['min_train_examples']}; add data or lower the setting")
    out_dir = Path(out_dir)
    run_dir = out_dir / "trainer"
    base = config["base_model"]
    if base == DEFAULT_STUDENT:
        base_dir = out_dir / "base"
        if not (base_dir / "config.json").exists():
            texts = [m["content"] for msgs in train_rows["messages"].to_list() for m in msgs]
            build_default_student(texts, base_dir, seed=config["seed"], **config.get("student", {}))
        base = str(base_dir)
    model, tokenizer = load_student(base)
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported() if config["bf16"] == "auto" else bool(config["bf16"])
    lora = LoraConfig(r=config["lora"]["r"], lora_alpha=config["lora"]["alpha"], lora_dropout=config["lora"]["dropout"],
                      target_modules=lora_targets(model, config["lora"]["target_modules"]), task_type="CAUSAL_LM")

    def as_dataset(frame):
        return datasets.Dataset.from_dict({"messages": frame["messages"].to_list()})

    has_eval = splits["validation"].height > 0
    flash = cuda and model.config._attn_implementation in ("flash_attention_2", "flash_attention_3")
    max_length = config["max_length"]
    if config["packing"]:
        max_length = packing_length(token_lengths(tokenizer, train_rows["messages"].to_list()), max_length, flash)
        log(f"partition {domain}: packing rows of {max_length} tokens")
    args = SFTConfig(
        output_dir=str(run_dir), max_steps=config["max_steps"] or -1, num_train_epochs=config["num_train_epochs"],
        learning_rate=config["learning_rate"], per_device_train_batch_size=config["per_device_train_batch_size"],
        gradient_accumulation_steps=config["gradient_accumulation_steps"], max_length=max_length,
        packing=config["packing"], assistant_only_loss=config["assistant_only_loss"], bf16=bf16,
        gradient_checkpointing=config["gradient_checkpointing"], logging_steps=1, save_strategy="steps",
        save_steps=config["save_steps"], save_total_limit=config["save_total_limit"],
        eval_strategy="steps" if has_eval else "no", eval_steps=config["eval_steps"],
        load_best_model_at_end=has_eval and config["early_stopping_patience"] > 0,
        metric_for_best_model="eval_loss", seed=config["seed"], report_to=[], use_cpu=not cuda,
        dataloader_num_workers=0, disable_tqdm=True)
    curve: list[dict] = []

    class Report(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                row = {"step": state.global_step, **{k: float(v) for k, v in logs.items()
                                                     if isinstance(v, (int, float))}}
                curve.append(row)
                if on_metrics:
                    on_metrics(row)

    callbacks = [Report()]
    if has_eval and config["early_stopping_patience"] > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config["early_stopping_patience"]))
    trainer = SFTTrainer(model=model, args=args, train_dataset=as_dataset(train_rows),
                         eval_dataset=as_dataset(splits["validation"]) if has_eval else None,
                         processing_class=tokenizer, peft_config=lora, callbacks=callbacks)
    resume = last_checkpoint(run_dir)
    if resume:
        log(f"partition {domain}: resuming from {resume}")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - start

    staging = out_dir / "adapter.partial"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    tokenizer.save_pretrained(str(staging))
    if config.get("merge"):
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(staging / "merged"))
        tokenizer.save_pretrained(str(staging / "merged"))
    losses = [r["loss"] for r in curve if "loss" in r]
    evals = [r["eval_loss"] for r in curve if "eval_loss" in r]
    record = {
        "domain": domain, "base_model": config["base_model"], "base_model_path": base,
        "lora": json.dumps(config["lora"] | {"target_modules": lora.target_modules if isinstance(
            lora.target_modules, str) else sorted(lora.target_modules)}),
        "steps": int(trainer.state.global_step), "resumed_from": resume,
        "final_loss": losses[-1] if losses else None, "best_loss": min(losses) if losses else None,
        "best_eval_loss": min(evals) if evals else None, "train_loss": float(result.training_loss),
        "wall_seconds": wall, "gpu_seconds": wall if cuda else 0.0,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "bf16": bf16,
        "train_examples": train_rows.height, "config_hash": config_hash(config),
        "files": sha256_files(staging),
    }
    (staging / MANIFEST).write_text(json.dumps({**record, "curve": curve}, indent=1))
    final = out_dir / "adapter"
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)  # the rename is the commit: only a complete adapter has a manifest in place
    record["curve"] = curve
    return record


def parse_sets(items: list[str]) -> dict:
    """--set KEY=YAML arguments as overrides."""
    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in items)}


def run_reporting_errors(run, error_file: Path) -> int:
    """Run; on failure leave the reason in error_file for a launcher that only sees an exit code."""
    error_file.unlink(missing_ok=True)
    try:
        return run()
    except Exception as exc:
        error_file.parent.mkdir(parents=True, exist_ok=True)
        error_file.write_text(f"{type(exc).__name__}: {exc}")
        raise


def pipes_or_stderr(stack: ExitStack):
    """(Dagster Pipes context or None, log function): Pipes when launched by Dagster, else stderr."""
    if not os.environ.get("DAGSTER_PIPES_CONTEXT"):
        return None, lambda message: print(message, file=sys.stderr)
    from dagster_pipes import open_dagster_pipes

    pipes = stack.enter_context(open_dagster_pipes())
    return pipes, pipes.log.info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-uri", required=True)
    parser.add_argument("--sft-version", type=int, required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    config = load_config(args.config, parse_sets(args.set))
    return run_reporting_errors(lambda: _run(args, config), Path(args.output_dir) / ERROR_FILE)


def _run(args, config: dict) -> int:
    with ExitStack() as stack:
        pipes, log = pipes_or_stderr(stack)
        splits = read_sft(args.sft_uri, args.sft_version, args.domain)
        log(f"partition {args.domain}: SFT v{args.sft_version}: " + ", ".join(
            f"{k}={v.height}" for k, v in splits.items()))
        def step_metrics(row: dict) -> None:  # per-step training metrics, streamed into the Dagster run log
            log("step {step}: ".format(**row) + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"))

        record = train(config, splits, Path(args.output_dir), args.domain, log=log, on_metrics=step_metrics)
        record["sft_version"] = args.sft_version
        if pipes:
            pipes.report_asset_materialization(metadata={"record": {"raw_value": json.dumps(record), "type": "json"}})
            losses = [r["loss"] for r in record["curve"] if "loss" in r]
            first, last = (sum(losses[:5]) / len(losses[:5]), sum(losses[-5:]) / len(losses[-5:])) if losses else (0, 0)
            pipes.report_asset_check(check_name="loss_decreased", passed=bool(losses) and last < first,
                                     metadata={"first_losses_mean": first, "last_losses_mean": last})
        else:
            print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
