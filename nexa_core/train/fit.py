"""One fit of TRL's SFTTrainer on token rows, shared by the reading stage and SFT: its SFTConfig from the typed
settings, the curve reported step by step, resumption from the newest complete checkpoint, and the record of
what it did (steps, losses, time, device, precision, tokens)."""

from __future__ import annotations

import difflib
import time
from pathlib import Path

from nexa_core.models.checkpoint import read_manifest
from nexa_core.models.device import device_name, precision, use_bf16
from nexa_core.recipe import TrainerConfig
from nexa_core.settings import SettingsError
from nexa_core.train.commit import last_checkpoint
from nexa_core.train.meter import FitMeter
from nexa_core.train.rows import VARLEN_ATTENTION, packing_length


def _completion_trainer():
    """TRL's SFTTrainer scoring only the positions that have a label, on the CPU.

    TRL projects hidden states through the LM head only at labelled positions on Triton devices; elsewhere it
    scores every position (prompt and padding included) and adds entropy and top-1 metrics over the whole
    vocabulary. With completion-only loss on short answers (about 1 position in 9 has a label in the
    sample SFT sets) that was a quarter of a CPU step. Here the backbone runs once, the head only on
    labelled positions, and the loss is the same token-mean cross-entropy (bench/train.py measures both)."""
    import torch
    from trl import SFTTrainer

    class CompletionSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:  # logits asked for: TRL's own path
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            core = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps it
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            # Accelerate puts bf16 autocast around model.forward only; this path calls the backbone and the head
            # itself, so it enters the trainer's autocast here (without it, reading and SFT computed in fp32).
            with self.accelerator.autocast():
                hidden = core.base_model(
                    input_ids=inputs["input_ids"],
                    attention_mask=inputs.get("attention_mask"),
                    position_ids=inputs.get("position_ids"),
                    use_cache=False,
                ).last_hidden_state
                logits = core.get_output_embeddings()(hidden[:, :-1][mask])
            logits = logits.float()
            targets = labels[mask]
            count = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum") / torch.as_tensor(count).clamp(
                min=1
            )
            mode = "train" if model.training else "eval"
            with torch.no_grad():
                correct = (logits.argmax(-1) == targets).sum().item()
            self._metrics[mode]["mean_token_accuracy"].append(correct / max(1, targets.numel()))
            if mode == "train":
                seen = inputs["attention_mask"].sum() if "attention_mask" in inputs else inputs["input_ids"].numel()
                self._total_train_tokens += int(seen)
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return CompletionSFTTrainer


def fit(
    model,
    tokenizer,
    train_rows: list[dict],
    eval_rows: list[dict],
    settings: TrainerConfig,
    run_dir: Path,
    domain: str,
    peft_config=None,
    log=print,
    on_metrics=None,
    ordered: bool = False,
) -> dict:
    """Train with TRL's SFTTrainer on token rows (input_ids + labels), resuming from the newest complete
    checkpoint in run_dir. Shared by the reading stage and SFT. Returns the trainer and its curve."""
    import datasets
    import torch
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    # settled already by the stages; here too for a caller that hands over the file's settings as they are
    settings = settings.for_student(bool(read_manifest(model.name_or_path).get("built_from_config")))
    cuda = torch.cuda.is_available()
    patience = early_stopping(settings, bool(eval_rows))
    max_length = row_length(settings, model, train_rows, cuda, domain, log)
    args = sft_config(settings, run_dir, max_length, bool(eval_rows), bool(patience), cuda, ordered)
    curve: list[dict] = []
    completion = not cuda and args.world_size == 1  # the head only at labelled positions (_completion_trainer)
    meter = FitMeter(settings.stage, domain, settings.progress_seconds, log, completion_head=completion)
    callbacks = [curve_reporter(curve, on_metrics), meter.callback()]
    if patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    as_dataset = datasets.Dataset.from_list
    trainer = meter.counting(_completion_trainer() if completion else SFTTrainer)(
        model=model,
        args=args,
        train_dataset=as_dataset(train_rows),
        eval_dataset=as_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every logged step as a dict, beside our own log line
    resume = last_checkpoint(run_dir)
    if resume:
        log(f"partition {domain}: resuming from {resume}")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - start
    record = fit_record(trainer, args, result, curve, resume, wall, cuda, train_rows)
    record |= meter.record(trainer.model, wall, args.bf16, args.world_size)  # tokens/s, MFU, padding, time outside
    return {"trainer": trainer, "curve": curve, "record": record}


def early_stopping(settings: TrainerConfig, has_eval: bool) -> int:
    """The patience of early stopping on the validation loss, 0 for none (reading has no eval split)."""
    patience = getattr(settings, "early_stopping_patience", 0)  # SFT's
    return patience if has_eval and patience > 0 else 0


def row_length(settings: TrainerConfig, model, train_rows: list[dict], cuda: bool, domain: str, log=print) -> int:
    """The longest row the trainer takes: max_length, or with packing the length packing_length picks for these rows."""
    if not settings.packing:
        return settings.max_length
    varlen = cuda and model.config._attn_implementation in VARLEN_ATTENTION
    length = packing_length([len(r["input_ids"]) for r in train_rows], settings.max_length, varlen)
    log(f"partition {domain}: packing rows of {length} tokens")
    return length


def sft_config(
    settings: TrainerConfig,
    run_dir: Path,
    max_length: int,
    has_eval: bool,
    early_stop: bool,
    cuda: bool,
    ordered: bool = False,
):
    """TRL's SFTConfig. The settings that are its fields go to it as they are (learning rate, epochs, batch,
    schedule, steps, seed, ...); then what this project decides from them; trainer_args (any other field) win.
    `ordered`: the rows come in the order to train them, every pass included (training_order): one sequential pass."""
    import dataclasses

    from trl import SFTConfig

    known = {f.name for f in dataclasses.fields(SFTConfig)}
    check_trainer_args(settings, known)
    values = {key: value for key, value in settings.to_dict().items() if key in known} | dict(
        output_dir=str(run_dir),
        max_steps=settings.max_steps or -1,
        max_length=max_length,
        bf16=use_bf16(settings.bf16),
        # batches of similar lengths: little compute is spent on padding when rows are not packed
        train_sampling_strategy="sequential"
        if ordered
        else "group_by_length"
        if settings.group_by_length
        else "random",
        **({"num_train_epochs": 1} if ordered else {}),
        save_strategy="steps",
        eval_strategy="steps" if has_eval else "no",
        load_best_model_at_end=early_stop,
        metric_for_best_model="eval_loss",
        report_to=[],
        use_cpu=not cuda,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return SFTConfig(**{**values, **settings.trainer_args})


def check_trainer_args(settings: TrainerConfig, known: set[str]) -> None:
    """trainer_args passes any other SFTConfig field: a key that is none is an error, as any unknown setting."""
    for key in settings.trainer_args:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            raise SettingsError(
                f"{settings.stage}: trainer_args.{key} is not a field of TRL's SFTConfig"
                + (f"; did you mean {' or '.join(close)}?" if close else "")
            )


def curve_reporter(curve: list[dict], on_metrics=None):
    """A callback that adds each logged row (the step and its numbers) to `curve` and hands it to on_metrics:
    the curve goes to the stage's log, in place of transformers' PrinterCallback."""
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                row = {
                    "step": state.global_step,
                    **{k: float(v) for k, v in logs.items() if isinstance(v, (int, float))},
                }
                curve.append(row)
                if on_metrics:
                    on_metrics(row)

    return Report()


def fit_record(
    trainer, args, result, curve: list[dict], resume: str | None, wall: float, cuda: bool, train_rows: list[dict]
) -> dict:
    """What a fit did: its steps and losses, where it resumed from, its time, device and precision, its tokens."""
    losses = [r["loss"] for r in curve if "loss" in r]
    evals = [r["eval_loss"] for r in curve if "eval_loss" in r]
    return {
        "steps": int(trainer.state.global_step),
        "resumed_from": resume,
        "final_loss": losses[-1] if losses else None,
        "best_loss": min(losses) if losses else None,
        "best_eval_loss": min(evals) if evals else None,
        "train_loss": float(result.training_loss),
        "wall_seconds": wall,
        "gpu_seconds": wall if cuda else 0.0,
        "device": device_name(),
        "bf16": args.bf16,
        "precision": precision(args.bf16),
        "world_size": args.world_size,
        "epoch_tokens": sum(len(r["input_ids"]) for r in train_rows),  # one pass over every row
        # every token of every row, as many times as the rows were passed over (state.epoch counts partial ones)
        "trained_tokens": round(float(trainer.state.epoch or 0) * sum(len(r["input_ids"]) for r in train_rows)),
    }
