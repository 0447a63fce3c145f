"""A trained model on disk: the trainer's checkpoints a run resumes from, and the finished model committed by
rename with its manifest, so a half-written folder is never taken for a finished one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nexa_core.artifacts import MANIFEST, commit_folder


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete trainer checkpoint: trainer_state.json is written last, so a folder
    without it was cut off mid-save and is skipped."""
    done = (
        [p for p in Path(run_dir).glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        if Path(run_dir).is_dir()
        else []
    )
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


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
