"""Fine-tune a student on one domain's SFT set: `python -m nexa_core.train.trainer ...`.

Runs standalone on a GPU node with torch/transformers/trl/peft/polars/deltalake and, when launched by
Dagster, dagster-pipes (logs, metrics and the checkpoint record go back through Pipes). It reads the
SFT set at the exact Delta version it is given, trains TRL's SFTTrainer (every weight by default, or a PEFT
LoRA adapter), and resumes from the last trainer checkpoint in the output folder when an earlier run was
interrupted.
The final adapter is written to a temporary folder and renamed into place with its manifest, so a
half-written checkpoint is never taken for a finished one.
"""

from __future__ import annotations

import difflib
import json
import shutil
import sys
import time
from pathlib import Path

from nexa_core.artifacts import MANIFEST, commit_folder
from nexa_core.recipe import FinetuneConfig, ReadingConfig, TrainerConfig
from nexa_core.settings import SettingsError
from nexa_core.stage import SFTRequest, serve
from nexa_core.teacher.question_forms import split_sentences


class TrainingError(ValueError):
    pass


# Attention that runs packed documents each on its own (varlen kernels, or flex attention's block mask)
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")


def packing_length(lengths: list[int], cap: int, varlen_attention: bool) -> int:
    """Length of a packed row. With varlen (flash) attention packed documents cost what they would
    alone, so rows are as long as allowed. Without it (SDPA/eager, CPU) a packed row pays attention
    over its whole length, so rows are the shortest power of two that holds the longest example:
    nothing is truncated and little is spent on cross-document attention."""
    if varlen_attention or not lengths:
        return cap
    longest = max(lengths)
    return min(cap, max(64, 1 << (longest - 1).bit_length()))


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


def read_sft(uri: str, version: int, domain: str, storage_options: dict | None = None):
    import polars as pl

    frame = (
        pl.scan_delta(uri, version=version, storage_options=storage_options)
        .filter(pl.col("domain") == domain)
        .collect()
    )
    return {split: frame.filter(pl.col("split") == split) for split in ("train", "validation", "test")}


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete trainer checkpoint: trainer_state.json is written last, so a folder
    without it was cut off mid-save and is skipped."""
    done = (
        [p for p in Path(run_dir).glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        if Path(run_dir).is_dir()
        else []
    )
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


# Flags of CPUs whose matrix units take bf16 natively: without one, bf16 autocast is slower than fp32
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def use_bf16(setting, cuda: bool | None = None, flags: set[str] | None = None) -> bool:
    """`bf16: auto` computes in bf16 (autocast, fp32 weights) on a GPU that supports it and on a CPU with
    avx512_bf16 or AMX; true/false force it."""
    if isinstance(setting, str) and setting.lower() in ("true", "false"):  # as a string-typed config field gives it
        setting = setting.lower() == "true"
    if setting != "auto":
        return bool(setting)
    import torch

    if torch.cuda.is_available() if cuda is None else cuda:
        return torch.cuda.is_bf16_supported()
    return bool(CPU_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def precision(bf16: bool) -> str:
    """What a record says about how a model computed: the weights stay fp32 under bf16 autocast."""
    return "bf16-autocast" if bf16 else "fp32"


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


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
            hidden = core.base_model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs.get("attention_mask"),
                position_ids=inputs.get("position_ids"),
                use_cache=False,
            ).last_hidden_state
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            logits = core.get_output_embeddings()(hidden[:, :-1][mask]).float()
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
) -> dict:
    """Train with TRL's SFTTrainer on token rows (input_ids + labels), resuming from the newest complete
    checkpoint in run_dir. Shared by the reading stage and SFT. Returns the trainer and its curve."""
    import dataclasses

    import datasets
    import torch
    from transformers import EarlyStoppingCallback, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from nexa_core.train.student import read_manifest

    CompletionSFTTrainer = _completion_trainer()
    # settled already by the stages; here too for a caller that hands over the file's settings as they are
    settings = settings.for_student(bool(read_manifest(model.name_or_path).get("built_from_config")))
    cuda = torch.cuda.is_available()
    bf16 = use_bf16(settings.bf16)
    max_length = settings.max_length
    if settings.packing:
        max_length = packing_length(
            [len(r["input_ids"]) for r in train_rows],
            max_length,
            cuda and model.config._attn_implementation in VARLEN_ATTENTION,
        )
        log(f"partition {domain}: packing rows of {max_length} tokens")
    patience = getattr(settings, "early_stopping_patience", 0)  # SFT's; reading has no eval split
    has_eval = bool(eval_rows)
    early_stop = has_eval and patience > 0
    # The settings that are SFTConfig fields go to it as they are (learning rate, epochs, batch, schedule,
    # steps, seed, ...); then what this project decides from them; trainer_args (any other field) win.
    known = {f.name for f in dataclasses.fields(SFTConfig)}
    check_trainer_args(settings, known)
    values = {key: value for key, value in settings.to_dict().items() if key in known} | dict(
        output_dir=str(run_dir),
        max_steps=settings.max_steps or -1,
        max_length=max_length,
        bf16=bf16,
        # batches of similar lengths: little compute is spent on padding when rows are not packed
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        save_strategy="steps",
        eval_strategy="steps" if has_eval else "no",
        load_best_model_at_end=early_stop,
        metric_for_best_model="eval_loss",
        report_to=[],
        use_cpu=not cuda,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    args = SFTConfig(**{**values, **settings.trainer_args})
    curve: list[dict] = []

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

    callbacks = [Report()]  # the curve goes to the stage's log; transformers' PrinterCallback is removed below
    if early_stop:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    as_dataset = datasets.Dataset.from_list
    trainer = (CompletionSFTTrainer if not cuda and args.world_size == 1 else SFTTrainer)(
        model=model,
        args=args,
        train_dataset=as_dataset(train_rows),
        eval_dataset=as_dataset(eval_rows) if has_eval else None,
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
    losses = [r["loss"] for r in curve if "loss" in r]
    evals = [r["eval_loss"] for r in curve if "eval_loss" in r]
    return {
        "trainer": trainer,
        "curve": curve,
        "record": {
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
            # every token of every row, as many times as the rows were passed over (state.epoch counts partial ones)
            "trained_tokens": round(float(trainer.state.epoch or 0) * sum(len(r["input_ids"]) for r in train_rows)),
        },
    }


def check_trainer_args(settings: TrainerConfig, known: set[str]) -> None:
    """trainer_args passes any other SFTConfig field: a key that is none is an error, as any unknown setting."""
    for key in settings.trainer_args:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            raise SettingsError(
                f"{settings.stage}: trainer_args.{key} is not a field of TRL's SFTConfig"
                + (f"; did you mean {' or '.join(close)}?" if close else "")
            )


def commit_model(trainer, tokenizer, out_dir: Path, name: str, record: dict, merge: bool = False) -> dict:
    """Save the trained model (adapter or full weights) under out_dir/name with a manifest of sha256s.
    Written to a staging folder and renamed: only a complete folder ever has a manifest in place.
    Under torchrun every rank takes part in saving (FSDP gathers the weights), rank 0 alone writes."""
    staging = out_dir / f"{name}.partial"
    main_process = trainer.is_world_process_zero()
    if record.get("bf16") and trainer.args.world_size == 1:
        # It computed in bf16: its fp32 master weights hold nothing it will use at inference, where it runs in
        # bf16 too. Saved in bf16 a 135M model is 270 MB, not 540 (a sharded model is saved as it is).
        import torch

        trainer.model.to(torch.bfloat16)
        record = {**record, "saved_dtype": "bfloat16"}
    if main_process:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    if not main_process:
        trainer.accelerator.wait_for_everyone()  # until rank 0 has committed
        return record
    tokenizer.save_pretrained(str(staging))
    if merge and hasattr(trainer.model, "merge_and_unload"):
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(staging / "merged"))
        tokenizer.save_pretrained(str(staging / "merged"))
    record = {**record, "files": commit_folder(staging, out_dir / name, record)}
    trainer.accelerator.wait_for_everyone()
    return record


def committed(out_dir: Path, *names: str) -> dict | None:
    """The record of a model already committed under out_dir (same inputs, same folder): a stage that
    finished is not run again, and its record is the one written when it finished."""
    for name in names:
        manifest = Path(out_dir) / name / MANIFEST
        if manifest.is_file():
            return {**json.loads(manifest.read_text()), "path": str(manifest.parent)}
    return None


def start_model(base: str, bases_dir: Path | str, domain: str, log=print) -> str:
    """The folder (or hub id) a base name resolves to (a named embedded base is converted once); a base
    that cannot be had is an error naming the partition, the base and the fix, never a fallback."""
    from nexa_core.train.bases import BaseModelError, resolve_base

    try:
        return resolve_base(base, bases_dir, log=log)
    except BaseModelError as exc:
        raise TrainingError(f"partition {domain}: {exc}") from exc


def bases_dir(args) -> Path:
    """Where named bases are converted: --bases-dir (the launcher's artifact root/bases), else beside the
    stage's output folder's domain folder."""
    return Path(args.bases_dir) if args.bases_dir else Path(args.output_dir).resolve().parent.parent / "bases"


def full_finetune(settings: FinetuneConfig, base_dir: str) -> bool:
    """`finetune: auto` trains every weight of a student built from a config (LoRA on frozen random
    weights teaches next to nothing) and a LoRA adapter on a pretrained base."""
    if settings.finetune != "auto":
        return settings.finetune == "full"
    manifest = Path(base_dir) / MANIFEST
    return manifest.is_file() and bool(json.loads(manifest.read_text()).get("built_from_config"))


def attention(settings: TrainerConfig) -> str | None:
    """The configured attention implementation; `auto` lets load_student choose."""
    return None if settings.attn_implementation == "auto" else settings.attn_implementation


def check_train_size(train_examples: int, settings: FinetuneConfig, domain: str, what: str) -> None:
    """Refuse to train on fewer than `min_train_examples`: checked before launching and again on the node."""
    if train_examples < settings.min_train_examples:
        raise TrainingError(
            f"partition {domain}: {what} has {train_examples} train examples, fewer than "
            f"min_train_examples={settings.min_train_examples}; add data or lower the setting"
        )


def lora_config(settings: FinetuneConfig, model):
    from peft import LoraConfig

    from nexa_core.train.student import lora_targets

    return LoraConfig(
        r=settings.lora.r,
        lora_alpha=settings.lora.alpha,
        lora_dropout=settings.lora.dropout,
        target_modules=lora_targets(model, settings.lora.target_modules),
        task_type="CAUSAL_LM",
    )


def train(
    settings: FinetuneConfig,
    splits: dict,
    out_dir: Path,
    domain: str,
    log=print,
    on_metrics=None,
    documents: list[str] | None = None,
    bases: Path | None = None,
) -> dict:
    """SFT from settings.base_model (normally the domain's student_base) and save; return the
    checkpoint record (without the artifact-level fields). `documents`, when given, are replayed as
    causal LM rows beside the QA pairs (`replay_documents`) so SFT does not wash out what was read."""
    from nexa_core.train.student import DEFAULT_STUDENT, build_default_student, load_student, read_manifest

    train_rows = splits["train"]
    check_train_size(train_rows.height, settings, domain, "the SFT train split")
    out_dir = Path(out_dir)
    if done := committed(out_dir, "model", "adapter"):
        log(f"partition {domain}: {done['path']} is already trained; nothing to do")
        return done
    given = settings  # as given: what is hashed and recorded, as the asset hashes it
    base = settings.base_model
    if base == DEFAULT_STUDENT:  # no reading stage ran: build the default from the SFT text itself
        base_dir = out_dir / "base"
        if not (base_dir / "config.json").exists():
            texts = [m["content"] for msgs in train_rows["messages"].to_list() for m in msgs]
            student = ReadingConfig.defaults().student
            build_default_student(texts, base_dir, seed=settings.seed, **vars(student))
        base = str(base_dir)
    else:  # a named base without a reading stage: its converted folder
        base = start_model(base, bases or out_dir.resolve().parent.parent / "bases", domain, log)
    settings = settings.for_student(bool(read_manifest(base).get("built_from_config")))
    try:
        model, tokenizer = load_student(base, attn_implementation=attention(settings))
    except ValueError as exc:
        raise TrainingError(f"partition {domain}: {exc}") from exc
    full = full_finetune(settings, base)
    lora = None if full else lora_config(settings, model)
    rows = conversation_rows(tokenizer, train_rows["messages"].to_list())
    qa_rows = len(rows)
    if documents and settings.replay_documents:  # what the student read, read again: no forgetting
        rows += document_rows(
            tokenizer,
            reading_texts(documents, settings.replay_sentence_passes, settings.seed + 1),
            settings.max_length,
        ) * int(settings.replay_documents)
    fitted = fit(
        model,
        tokenizer,
        rows,
        conversation_rows(tokenizer, splits["validation"]["messages"].to_list()),
        settings,
        out_dir / "trainer",
        domain,
        peft_config=lora,
        log=log,
        on_metrics=on_metrics,
    )
    lora_record = (
        None
        if full
        else json.dumps(
            vars(settings.lora)
            | {
                "target_modules": lora.target_modules
                if isinstance(lora.target_modules, str)
                else sorted(lora.target_modules)
            }
        )
    )
    record = {
        "domain": domain,
        "base_model": settings.base_model,
        "base_model_path": base,
        "finetune": "full" if full else "lora",
        "lora": lora_record,
        **fitted["record"],
        "train_examples": train_rows.height,
        "qa_rows": qa_rows,
        "replayed_rows": len(rows) - qa_rows,
        "config_hash": given.digest(),
        "settings": given.to_dict(),
    }
    record = commit_model(
        fitted["trainer"],
        tokenizer,
        out_dir,
        "model" if full else "adapter",
        {**record, "curve": fitted["curve"]},
        merge=settings.merge,
    )
    return record


def stage_main(argv: list[str] | None, description: str, request_type, run_stage) -> int:
    """The reading stage's and SFT's entry: their request's flags and typed settings (an unknown or mistyped
    setting stops it here, named); the record goes back with the loss_decreased check."""
    request = request_type.parse(argv, description)
    settings = request.recipe()

    def work(log) -> dict:
        def step_metrics(row: dict) -> None:  # per-step training metrics, streamed into the Dagster run log
            log("step {step}: ".format(**row) + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"))

        return run_stage(request, settings, log, step_metrics)

    return serve(request, work, after=report_loss_check)


def report_loss_check(pipes, record: dict) -> None:
    losses = [r["loss"] for r in record["curve"] if "loss" in r]
    k = min(5, len(losses) // 2)  # the first and last k logged losses never overlap
    first, last = (sum(losses[:k]) / k, sum(losses[-k:]) / k) if k else (0, 0)
    pipes.report_asset_check(
        check_name="loss_decreased",
        passed=bool(k) and last < first,
        metadata={"first_losses_mean": first, "last_losses_mean": last, "logged_losses": len(losses)},
    )


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


def _sft(args, settings: FinetuneConfig, log, on_metrics) -> dict:
    splits = read_sft(args.sft_uri, args.sft_version, args.domain)
    log(f"partition {args.domain}: SFT v{args.sft_version}: " + ", ".join(f"{k}={v.height}" for k, v in splits.items()))
    # read whenever given: whether they are replayed (replay_documents) depends on the kind of student
    documents = read_documents(args.documents_uri, args.documents_version, args.domain) if args.documents_uri else None
    record = train(
        settings,
        splits,
        Path(args.output_dir),
        args.domain,
        log=log,
        on_metrics=on_metrics,
        documents=documents,
        bases=bases_dir(args),
    )
    return {**record, "sft_version": args.sft_version}


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__.splitlines()[0], SFTRequest, _sft)


if __name__ == "__main__":
    sys.exit(main())
