"""What the pair filters reject on real text: the offline teacher's pairs (nexa_core/teacher/question_forms.py)
through filter_pairs, counted per reject reason, beside the same count made by the rule set (generators and
filters) of a baseline git revision, run from that revision's nexa_core in a subprocess.

Usage: python bench/pair_filters.py [--corpus PATH.jsonl] [--baseline REV] [--examples N] [--smoke]

The corpus is a JSONL file of {id, domain, text} paragraphs, each one document (default: SciQ's validation
paragraphs in ../shared/realtext/, read by path and never copied here). --smoke runs on the project's own
sample corpus (data/raw). The baseline's nexa_core comes out of git with `git archive`, into a temporary
folder; the working tree is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# NEXA_CODE_ROOT: where `nexa_core` is imported from (a baseline revision's copy, for the baseline's count).
sys.path.insert(0, os.environ.get("NEXA_CODE_ROOT") or str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

REAL_CORPUS = ROOT.parent / "shared" / "realtext" / "paragraphs.jsonl"
BASELINE = "abe50b5"  # main before issue 29's filters and generator fixes


def documents(corpus: str | None):
    """The corpus as raw_documents rows: every paragraph of the JSONL file, or the sample corpus's documents."""
    import polars as pl

    from nexa_core import schemas

    if corpus is None:
        from nexa_core.data.documents import load_domain

        return pl.concat([load_domain(ROOT / "data" / "raw", d)[0] for d in ("physics", "chemistry", "biology")])
    rows = [json.loads(line) for line in Path(corpus).read_text(encoding="utf-8").splitlines() if line.strip()]
    return pl.DataFrame(
        [
            {
                "domain": r["domain"],
                "doc_id": r["id"],
                "topic": r["domain"],
                "title": r["id"],
                "text": r["text"],
                "source_path": f"{Path(corpus).name}:{i + 1}",
                "source_row": i + 1,
                "n_chars": len(r["text"]),
            }
            for i, r in enumerate(rows)
        ],
        schema=schemas.RAW_DOCUMENTS,
    )


def count(corpus: str | None, examples: int) -> dict:
    """Requests, pairs, and pairs per verdict (kept or a reject reason) and kept pairs per form, with up to
    `examples` rejected pairs per reason; the teacher's ledger in a throw-away Delta folder."""
    import polars as pl

    from nexa_core.delta import DeltaRoot
    from nexa_core.distill.filters import filter_pairs, form_counts, reason_counts
    from nexa_core.distill.prompts import load_template
    from nexa_core.distill.teacher_inputs import build_teacher_inputs
    from nexa_core.teacher import HeuristicTeacher, TeacherLedger, collect_responses

    docs = documents(corpus)
    inputs = build_teacher_inputs(docs, load_template("qa_pairs_v1"))  # the pipeline's PromptConfig
    with tempfile.TemporaryDirectory(prefix="nexa-bench-ledger-") as ledger_root:
        outputs, _ = collect_responses(
            inputs, HeuristicTeacher(), TeacherLedger(DeltaRoot(ledger_root), "bench"), log=lambda message: None
        )
    pairs = filter_pairs(outputs, inputs)
    shown = pairs.filter(
        pl.col("question").is_not_null() & (pl.int_range(pl.len()).over("reject_reason") < examples)
    ).drop_nulls("reject_reason")
    return {
        "documents": docs.height,
        "requests": inputs.height,
        "pairs": pairs.height,
        "verdicts": reason_counts(pairs),
        "kept_by_form": form_counts(pairs),
        "examples": shown.select("reject_reason", "question", "answer").rows(),
    }


def baseline_count(rev: str, corpus: str | None) -> dict:
    """`count` run by the nexa_core of git revision `rev`, in a subprocess."""
    archive = subprocess.run(["git", "archive", rev, "nexa_core"], cwd=ROOT, capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="nexa-baseline-") as code:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(code, filter="data")
        args = [sys.executable, __file__, "--count-only", *(["--corpus", corpus] if corpus else ["--smoke"])]
        run = subprocess.run(
            args, env={**os.environ, "NEXA_CODE_ROOT": code}, capture_output=True, text=True, check=False
        )
    if run.returncode:
        raise SystemExit(f"the baseline count at {rev} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REAL_CORPUS), help="JSONL of {id, domain, text} paragraphs")
    parser.add_argument("--baseline", default=BASELINE, help="git revision whose rule set is the baseline")
    parser.add_argument("--examples", type=int, default=2, help="rejected pairs shown per reason")
    parser.add_argument("--smoke", action="store_true", help="the sample corpus in data/raw instead")
    parser.add_argument("--count-only", action="store_true", help=argparse.SUPPRESS)  # the baseline's subprocess
    args = parser.parse_args()
    corpus = None if args.smoke else args.corpus
    if args.count_only:
        print(json.dumps(count(corpus, 0)))
        return

    from corpus import machine_line

    print(machine_line())
    print(f"corpus: {corpus or 'data/raw (physics, chemistry, biology)'}")
    before, after = baseline_count(args.baseline, corpus), count(corpus, args.examples)
    print(f"documents {after['documents']}, teacher requests {after['requests']}")
    print(f"\n{'verdict':24s} {'baseline ' + args.baseline:>18s} {'this tree':>10s}")
    print(f"{'pairs':24s} {before['pairs']:>18d} {after['pairs']:>10d}")
    reasons = list(after["verdicts"]) + [r for r in before["verdicts"] if r not in after["verdicts"]]
    for reason in ["kept"] + [r for r in reasons if r != "kept"]:
        print(f"{reason:24s} {before['verdicts'].get(reason, 0):>18d} {after['verdicts'].get(reason, 0):>10d}")
    print(f"\n{'kept pairs by form':24s} {'baseline ' + args.baseline:>18s} {'this tree':>10s}")
    forms = list(after["kept_by_form"]) + [f for f in before["kept_by_form"] if f not in after["kept_by_form"]]
    for form in forms:
        print(f"{form:24s} {before['kept_by_form'].get(form, 0):>18d} {after['kept_by_form'].get(form, 0):>10d}")
    if after["examples"]:
        print("\nrejected by this tree, for example:")
        for reason, question, answer in after["examples"]:
            print(f"  {reason:22s} {question[:90]!r} -> {answer[:60]!r}")


if __name__ == "__main__":
    main()
