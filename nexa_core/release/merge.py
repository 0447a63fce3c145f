"""A release's weights, merged where the checkpoint lies and not in the orchestrator's process:
`python -m nexa_core.release.merge` (the model_release stage). Reports what merge_checkpoint made and, when
the request names a registered model, the MLflow version it logged (the weights are loaded here only)."""

from __future__ import annotations

import sys
from pathlib import Path

from nexa_core.artifacts import sha256_files, staging_for
from nexa_core.stage import MergeRequest, serve


def merge_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, dtype: str = "auto") -> dict:
    """Full weights of the checkpoint in `out_dir` + ".partial": a LoRA adapter merged into its base (a
    full fine-tune is copied as it is), its tokenizer and chat template beside, saved in `dtype` (auto: the
    precision the checkpoint was saved in, bf16 when trained in it). Returns what was merged and the sha256 of
    every file; commit_release renames the folder into place."""
    import torch
    from peft import PeftModel

    from nexa_core.models.checkpoint import resolve_checkpoint
    from nexa_core.models.load import load_student

    model_path, adapter, base_path = resolve_checkpoint(checkpoint_dir)
    staging = staging_for(Path(out_dir))
    model, _ = load_student(model_path, dtype="auto" if dtype == "auto" else getattr(torch, dtype))
    if adapter:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer = checkpoint_tokenizer(checkpoint_dir)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return {
        "merged_from": str(adapter or model_path),
        "adapter": adapter,
        "base_model_path": base_path,
        "staging": str(staging),
        "files": sha256_files(staging),
    }


def checkpoint_tokenizer(checkpoint_dir: str | Path):
    """The checkpoint folder's tokenizer (the one it was trained and evaluated with), its chat template
    filled in as load_student does, so the merged folder serves the same prompts."""
    from transformers import AutoTokenizer

    from nexa_core.models.load import CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def merge_and_register(request: MergeRequest, log) -> dict:
    from nexa_core.release.registry import RegistryTarget, register_release

    settings = request.recipe()
    merged = merge_checkpoint(request.checkpoint, request.output_dir, settings.dtype)
    merged |= {"merged_uri": request.output_dir, "settings": settings.to_dict()}
    log(f"merged {merged['merged_from']} into {merged['staging']}")
    if request.registered_model:
        target = RegistryTarget(request.tracking_uri, request.experiment_id, request.registered_model)
        merged |= register_release(target, merged, request.registry_tags())
        log(f"registered {merged['registered_model']} v{merged['model_version']}")
    return merged


def main(argv: list[str] | None = None) -> int:
    request = MergeRequest.parse(argv, __doc__.splitlines()[0])
    return serve(request, lambda log: merge_and_register(request, log))


if __name__ == "__main__":
    sys.exit(main())
