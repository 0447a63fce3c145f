"""Fine-tune a student on one domain's SFT set: `python -m nexa_core.train.trainer ...`.

Runs standalone on a GPU node with torch/transformers/trl/peft/polars/deltalake and, when launched by
Dagster, dagster-pipes (logs, metrics and the checkpoint record go back through Pipes). It reads the
SFT set at the exact Delta version it is given, trains TRL's SFTTrainer (every weight by default, or a PEFT
LoRA adapter), and resumes from the last trainer checkpoint in the output folder when an earlier run was
interrupted.
The final adapter is written to a temporary folder and renamed into place with its manifest, so a
half-written checkpoint is never taken for a finished one.

The pieces: the rows it trains on (rows.py), how a stage starts and what its settings decide (start.py), the fit
(fit.py) and the commit (commit.py), shared with the reading stage (pretrain.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nexa_core.distill.restatements import read_restatements
from nexa_core.models.bases import DEFAULT_STUDENT
from nexa_core.models.checkpoint import read_manifest
from nexa_core.models.load import load_student
from nexa_core.recipe import FinetuneConfig, ReadingConfig
from nexa_core.stage import SFTRequest
from nexa_core.train.commit import commit_model, committed
from nexa_core.train.fit import fit
from nexa_core.train.rows import (
    conversation_rows,
    document_rows,
    read_documents,
    read_sft,
    reading_texts,
    training_order,
)
from nexa_core.train.start import (
    TrainingError,
    attention,
    bases_dir,
    check_train_size,
    full_finetune,
    lora_config,
    stage_main,
    start_model,
)
from nexa_core.train.student import build_default_student


def train(
    settings: FinetuneConfig,
    splits: dict,
    out_dir: Path,
    domain: str,
    log=print,
    on_metrics=None,
    documents: list[str] | None = None,
    bases: Path | None = None,
    restatements: list[str] | None = None,
) -> dict:
    """SFT from settings.base_model (normally the domain's student_base) and save; return the
    checkpoint record (without the artifact-level fields). The QA pairs alone first for `qa_first_epochs`
    (pre-instruction-tuning), then `num_train_epochs` of the pairs mixed with the documents (`replay_documents`
    passes: SFT does not wash out what was read) and the teacher's restatements (`restatement_passes`)."""
    train_rows = splits["train"]
    check_train_size(train_rows.height, settings, domain, "the SFT train split")
    out_dir = Path(out_dir)
    if done := committed(out_dir, "model", "adapter"):
        log(f"partition {domain}: {done['path']} is already trained; nothing to do")
        return done
    given = settings  # as given: what is hashed and recorded, as the asset hashes it
    base = sft_base(settings, train_rows, out_dir, domain, bases, log)
    settings = settings.for_student(bool(read_manifest(base).get("built_from_config")))
    try:
        model, tokenizer = load_student(base, attn_implementation=attention(settings))
    except ValueError as exc:
        raise TrainingError(f"partition {domain}: {exc}") from exc
    full = full_finetune(settings, base)
    lora = None if full else lora_config(settings, model)
    qa, read, restated = sft_rows(tokenizer, settings, train_rows, documents, restatements)
    phases = [("qa", qa, settings.qa_first_epochs), ("mixed", qa + read + restated, settings.num_train_epochs)]
    if settings.packing and settings.qa_first_epochs:
        raise TrainingError(f"partition {domain}: qa_first_epochs needs packing off (packing would mix the phases)")
    batch = settings.per_device_train_batch_size * settings.gradient_accumulation_steps
    ordered, schedule = training_order(phases, batch, settings.seed)
    log(f"partition {domain}: " + "; ".join(f"{p['phase']} {p['epochs']} epochs, {p['rows']} rows" for p in schedule))
    validation = conversation_rows(tokenizer, splits["validation"]["messages"].to_list())
    run_dir = out_dir / "trainer"
    fitted = fit(
        model,
        tokenizer,
        ordered,
        validation,
        settings,
        run_dir,
        domain,
        lora,
        log=log,
        on_metrics=on_metrics,
        ordered=True,
    )
    record = {
        "domain": domain,
        "base_model": settings.base_model,
        "base_model_path": base,
        "finetune": "full" if full else "lora",
        "lora": None if full else lora_record(settings, lora),
        **fitted["record"],
        "train_examples": train_rows.height,
        "qa_rows": len(qa),
        "replayed_rows": len(read),
        "restated_rows": len(restated),
        "schedule": schedule,
        "config_hash": given.digest(),
        "settings": given.to_dict(),
    }
    name = "model" if full else "adapter"
    return commit_model(
        fitted["trainer"], tokenizer, out_dir, name, {**record, "curve": fitted["curve"]}, merge=settings.merge
    )


def sft_rows(tokenizer, settings: FinetuneConfig, train_rows, documents, restatements) -> tuple[list, list, list]:
    """(QA pair rows, the documents read again, the restatements read): each a pass, the last two as causal LM rows."""
    qa = conversation_rows(tokenizer, train_rows["messages"].to_list())
    read = (
        document_rows(
            tokenizer,
            reading_texts(documents, settings.replay_sentence_passes, settings.seed + 1),
            settings.max_length,
        )
        * int(settings.replay_documents)
        if documents and settings.replay_documents
        else []
    )
    restated = (
        document_rows(tokenizer, restatements, settings.max_length) * settings.restatement_passes
        if restatements and settings.restatement_passes
        else []
    )
    return qa, read, restated


def sft_base(settings: FinetuneConfig, train_rows, out_dir: Path, domain: str, bases: Path | None, log=print) -> str:
    """The model SFT starts from: settings.base_model as it is (the domain's student_base); without a reading stage,
    the default student built from the SFT text itself, or a named base's converted folder."""
    base = settings.base_model
    if base == DEFAULT_STUDENT:
        base_dir = out_dir / "base"
        if not (base_dir / "config.json").exists():
            texts = [m["content"] for msgs in train_rows["messages"].to_list() for m in msgs]
            student = ReadingConfig.defaults().student
            build_default_student(texts, base_dir, seed=settings.seed, **vars(student))
        return str(base_dir)
    return start_model(base, bases or out_dir.resolve().parent.parent / "bases", domain, log)


def lora_record(settings: FinetuneConfig, lora) -> str:
    """The LoRA settings as the checkpoint row records them, with the target modules it resolved to."""
    targets = lora.target_modules
    return json.dumps(
        vars(settings.lora) | {"target_modules": targets if isinstance(targets, str) else sorted(targets)}
    )


def _sft(args, settings: FinetuneConfig, log, on_metrics) -> dict:
    splits = read_sft(args.sft_uri, args.sft_version, args.domain)
    log(f"partition {args.domain}: SFT v{args.sft_version}: " + ", ".join(f"{k}={v.height}" for k, v in splits.items()))
    # read whenever given: whether they are replayed (replay_documents) depends on the kind of student
    documents = read_documents(args.documents_uri, args.documents_version, args.domain) if args.documents_uri else None
    restatements = (
        read_restatements(
            args.restatements_uri,
            args.restatements_version,
            args.domain,
            asked_of=set(splits["train"]["doc_id"]),  # a held-out document's facts are never asked
        )
        if args.restatements_uri and settings.restatement_passes
        else None
    )
    record = train(
        settings,
        splits,
        Path(args.output_dir),
        args.domain,
        log=log,
        on_metrics=on_metrics,
        documents=documents,
        bases=bases_dir(args),
        restatements=restatements,
    )
    return {**record, "sft_version": args.sft_version, "restatements_version": args.restatements_version}


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__.splitlines()[0], SFTRequest, _sft)


if __name__ == "__main__":
    sys.exit(main())
