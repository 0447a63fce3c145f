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


def teacher_pairs(corpus: str | None):
    """(documents, teacher inputs, the offline teacher's outputs, its restatements' counts) of the corpus, with
    the teacher's ledger in a throw-away Delta folder."""
    from nexa_core.delta import DeltaRoot
    from nexa_core.distill.prompts import load_template
    from nexa_core.distill.teacher_inputs import build_teacher_inputs
    from nexa_core.teacher import HeuristicTeacher, TeacherLedger, collect_responses

    docs = documents(corpus)
    inputs = build_teacher_inputs(docs, load_template("qa_pairs_v1"))  # the pipeline's PromptConfig
    with tempfile.TemporaryDirectory(prefix="nexa-bench-ledger-") as ledger_root:
        ledger = TeacherLedger(DeltaRoot(ledger_root), "bench")
        outputs, _ = collect_responses(inputs, HeuristicTeacher(), ledger, log=lambda message: None)
        restated = restatement_count(inputs, ledger)
    return docs, inputs, outputs, restated


def verdicts(inputs, outputs, examples: int) -> dict:
    """Pairs, pairs per verdict (kept or a reject reason) and kept pairs per form, by the filters of the
    nexa_core imported here, with up to `examples` rejected pairs per reason."""
    import polars as pl

    from nexa_core.distill.filters import filter_pairs, form_counts, reason_counts

    pairs = filter_pairs(outputs, inputs)
    shown = pairs.filter(
        pl.col("question").is_not_null() & (pl.int_range(pl.len()).over("reject_reason") < examples)
    ).drop_nulls("reject_reason")
    return {
        "pairs": pairs.height,
        "verdicts": reason_counts(pairs),
        "kept_by_form": form_counts(pairs),
        "examples": shown.select("reject_reason", "question", "answer").rows(),
    }


def restatement_count(inputs, ledger) -> dict | None:
    """The offline teacher's restatements of the same passages, per verdict and kept per kind; None for a
    revision that has none."""
    try:
        from nexa_core.distill.restatements import (
            parse_restatements,
            restatement_counts,
            restatement_requests,
            screen_restatements,
        )
    except ImportError:
        return None
    from nexa_core.distill.filters import form_counts
    from nexa_core.distill.prompts import load_template
    from nexa_core.teacher import HeuristicTeacher, collect_responses

    requests = restatement_requests(inputs, load_template("restatements_v1"))
    outputs, _ = collect_responses(
        requests, HeuristicTeacher(), ledger, validate=parse_restatements, log=lambda message: None
    )
    rows = screen_restatements(requests, outputs)
    return {"passages": requests.height, "verdicts": restatement_counts(rows), "kept_by_kind": form_counts(rows)}


def baseline_count(rev: str, corpus: str | None) -> tuple[dict, dict]:
    """(the count of git revision `rev`'s nexa_core, run in a subprocess; the count of this tree's filters
    over that revision's pairs)."""
    import polars as pl

    archive = subprocess.run(["git", "archive", rev, "nexa_core"], cwd=ROOT, capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="nexa-baseline-") as code:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(code, filter="data")
        args = [sys.executable, __file__, "--count-only", code, *(["--corpus", corpus] if corpus else ["--smoke"])]
        run = subprocess.run(
            args, env={**os.environ, "NEXA_CODE_ROOT": code}, capture_output=True, text=True, check=False
        )
        if run.returncode:
            raise SystemExit(f"the baseline count at {rev} failed:\n{run.stderr[-3000:]}")
        inputs, outputs = (pl.read_parquet(Path(code) / f"{name}.parquet") for name in ("inputs", "outputs"))
    return json.loads(run.stdout.splitlines()[-1]), verdicts(inputs, outputs, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REAL_CORPUS), help="JSONL of {id, domain, text} paragraphs")
    parser.add_argument("--baseline", default=BASELINE, help="git revision whose rule set is the baseline")
    parser.add_argument("--examples", type=int, default=2, help="rejected pairs shown per reason")
    parser.add_argument("--smoke", action="store_true", help="the sample corpus in data/raw instead")
    parser.add_argument("--count-only", help=argparse.SUPPRESS)  # the baseline's subprocess: a folder for its pairs
    args = parser.parse_args()
    corpus = None if args.smoke else args.corpus
    if args.count_only:
        _, inputs, outputs, _ = teacher_pairs(corpus)
        inputs.write_parquet(Path(args.count_only) / "inputs.parquet")
        outputs.write_parquet(Path(args.count_only) / "outputs.parquet")
        print(json.dumps(verdicts(inputs, outputs, 0)))
        return

    from corpus import machine_line

    print(machine_line())
    print(f"corpus: {corpus or 'data/raw (physics, chemistry, biology)'}")
    before, refiltered = baseline_count(args.baseline, corpus)
    docs, inputs, outputs, restated = teacher_pairs(corpus)
    after = verdicts(inputs, outputs, args.examples)
    print(f"documents {docs.height}, teacher requests {inputs.height}")
    columns = (f"baseline {args.baseline}", f"{args.baseline} pairs, new filters", "this tree")
    counts = (before, refiltered, after)

    def table(title: str, key: str, first: list[str]) -> None:
        print(f"\n{title:24s} " + " ".join(f"{c:>28s}" for c in columns))
        if key == "verdicts":
            print(f"{'pairs':24s} " + " ".join(f"{c['pairs']:>28d}" for c in counts))
        rows = first + [r for c in reversed(counts) for r in c[key]]  # this tree's order first
        for row in dict.fromkeys(rows):
            print(f"{row:24s} " + " ".join(f"{c[key].get(row, 0):>28d}" for c in counts))

    table("verdict", "verdicts", ["kept"])
    table("kept pairs by form", "kept_by_form", [])
    if restated:
        print(f"\nrestatements of the {restated['passages']} passages (this tree; the offline teacher's rules)")
        for verdict, n in restated["verdicts"].items():
            print(f"  {verdict:22s} {n:>8d}")
        print("  kept by kind: " + ", ".join(f"{kind} {n}" for kind, n in restated["kept_by_kind"].items()))
    if after["examples"]:
        print("\nrejected by this tree, for example:")
        for reason, question, answer in after["examples"]:
            print(f"  {reason:22s} {question[:90]!r} -> {answer[:60]!r}")


if __name__ == "__main__":
    main()
