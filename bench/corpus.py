"""What the training and generation benchmarks train and ask: a sample domain taken through the real
distillation stages (raw documents -> teacher inputs -> offline teacher -> filters -> SFT split),
outside Dagster, with the teacher's ledger in a throw-away Delta folder. Saved as one JSON file so a GPU
node without Delta Lake can run the benchmark on exactly the same data."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine_line() -> str:
    """The machine and the command, printed first by every benchmark."""
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        versions = f"torch {torch.__version__}"
    except ImportError:
        device, versions = "no GPU", "no torch"
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {device}, {platform.python_implementation()} "
        f"{platform.python_version()}, {versions}; command: {' '.join(sys.argv)}"
    )


def build(domain: str) -> dict:
    """{"documents": [text, ...], "splits": {"train"|"validation"|"test": [example row, ...]}}."""
    from nexa_core.data.documents import load_domain
    from nexa_core.delta import DeltaRoot
    from nexa_core.distill.filters import filter_pairs
    from nexa_core.distill.prompts import load_template
    from nexa_core.distill.sft import build_sft_dataset
    from nexa_core.distill.teacher_inputs import build_teacher_inputs
    from nexa_core.teacher import HeuristicTeacher, TeacherLedger, collect_responses

    docs, _ = load_domain(ROOT / "data" / "raw", domain)
    inputs = build_teacher_inputs(docs, load_template("qa_pairs_v1"))  # the pipeline's PromptConfig
    ledger = TeacherLedger(DeltaRoot(tempfile.mkdtemp(prefix="nexa-bench-ledger-")), domain)
    outputs, _ = collect_responses(inputs, HeuristicTeacher(), ledger, log=lambda message: None)
    sft = build_sft_dataset(filter_pairs(outputs, inputs))
    return {
        "documents": docs.sort("doc_id")["text"].to_list(),
        "splits": {
            split: sft.filter(sft["split"] == split).select("example_id", "topic", "messages").to_dicts()
            for split in ("train", "validation", "test")
        },
    }


def load(domain: str, path: str | None) -> dict:
    """The domain's data from `path` when it exists (a GPU node), else built here and, with a path, saved."""
    if path and Path(path).is_file():
        return json.loads(Path(path).read_text())
    data = build(domain)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data))
    return data
