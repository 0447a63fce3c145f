"""A half-depth student distilled from each domain's champion, beside the champion, the same pruned copy trained by
SFT alone and the off-the-shelf base; and what caching only the teacher's top k loses.

Usage: python bench/distill_kd.py [DOMAIN ...] [--k 32] [--compare-k 8,32,128] [--students-k 8,128] [--smoke]

Runs the whole graph (nexa_job) for each domain on the offline defaults (the main command's settings; the
champion is its student_checkpoint), then kd_job (teacher_logits at --k, student_distilled on
nexa_core/configs/kd_default.yaml, distilled_scores) into a temporary home, and prints per domain: each model's
size, new tokens/s and its test-split token F1 and contains and suite accuracy and acc_norm with 95% bootstrap
intervals; the targets (the student keeps 90% of the champion's suite accuracy and test token F1, generates
1.7x its tokens/s, and scores above the SFT-only copy) with whether the intervals are apart; the teacher's
probability mass in its top k and the KL the student is charged from the top k beside the full-vocabulary KL;
the time of each job. --students-k: also a student trained on the top k of each of these k (no SFT-only copy),
scored on the test split and the suites beside the first. --smoke: physics, a config-built student, a few
steps, to check it runs (its figures mean nothing).
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from isolated import isolated_graph, print_machine, smoke_config  # noqa: E402

TARGETS = [("suites", "accuracy"), ("suites", "acc_norm"), ("test", "token_f1")]


def top_k_comparison(tmp: Path, domain: str, distilled: dict, ks: list[int], batches: int = 8) -> list[dict]:
    """top_k_fidelity of the champion and its distilled student on the first batches of the cached train split."""
    from nexa_core.models.load import load_for_eval
    from nexa_core.train.kd import cached_batches, read_logits, top_k_fidelity

    teacher, tokenizer = load_for_eval(distilled["teacher_uri"], "student", "false")
    student, _ = load_for_eval(distilled["model_uri"], "student", "false")
    uri = str(tmp / "delta" / "nexa" / "teacher_logits")
    rows = read_logits(uri, distilled["logits_version"], domain, distilled["logits_id"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data, _ = cached_batches(rows[: batches * 16], 16, pad)
    vocab = teacher.get_output_embeddings().weight.shape[0]
    return top_k_fidelity(teacher, student, data, [k for k in ks if k <= vocab])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domains", nargs="*", default=["physics", "chemistry", "biology"])
    parser.add_argument("--k", type=int, default=32, help="log-probabilities cached per token")
    parser.add_argument("--compare-k", default="8,32,128", help="the top-k sizes measured against the full KL")
    parser.add_argument("--students-k", default="", help="also train and score a student at each of these k")
    parser.add_argument("--smoke", action="store_true", help="physics, a config-built student, a few steps")
    args = parser.parse_args()
    ks = [int(k) for k in args.compare_k.split(",")]
    students_k = [int(k) for k in args.students_k.split(",") if k]
    if args.smoke:
        args.domains, args.k, ks, students_k = ["physics"], 8, [2, 8], [2]
    print_machine()
    tmp, instance, defs = isolated_graph("nexa-kd-", args.domains)
    import polars as pl

    from nexa_core.evaluate.distilled import distilled_verdicts
    from nexa_core.evaluate.leaderboard import distilled_markdown

    ops = {"raw_documents": {"config": {"raw_root": str(ROOT / "data" / "raw")}}}
    kd_ops = {"teacher_logits": {"config": {"k": args.k}}}
    if args.smoke:
        ops |= smoke_config(4)
        kd_ops["student_distilled"] = {"config": {"num_train_epochs": 1}}
        kd_ops["distilled_scores"] = {"config": {"generation": {"max_new_tokens": 8}}}
    for domain in args.domains:
        seconds = {}
        for job, run_config in (("nexa_job", {"ops": ops}), ("kd_job", {"ops": kd_ops})):
            start = time.perf_counter()
            result = defs.resolve_job_def(job).execute_in_process(
                partition_key=domain, instance=instance, run_config=run_config, raise_on_error=False
            )
            seconds[job] = time.perf_counter() - start
            print(f"{domain} {job}: {'ok' if result.success else 'FAILED'} in {seconds[job]:.0f} s", file=sys.stderr)
            if not result.success:
                return 1
        table = pl.read_delta(str(tmp / "delta" / "nexa" / "student_distilled"))
        distilled = table.filter(pl.col("domain") == domain).row(0, named=True)
        scores = pl.read_delta(str(tmp / "delta" / "nexa" / "distilled_scores")).filter(pl.col("domain") == domain)
        verdicts = distilled_verdicts(scores)
        print(
            f"\n{domain}: the champion ({distilled['teacher_parameters'] / 1e6:.1f}M parameters, "
            f"{distilled['teacher_layers']} layers) and its student ({distilled['parameters'] / 1e6:.1f}M, layers "
            f"{distilled['kept_layers']}), trained {distilled['steps']} steps in {distilled['wall_seconds']:.0f} s "
            f"({distilled['precision']}); the SFT-only copy the same steps; mean [95% bootstrap interval]"
        )
        print(distilled_markdown(scores))
        print(f"targets: speed-up {verdicts.get('speedup', float('nan')):.2f}x (target 1.7x)")
        for source, metric in TARGETS:
            kept = verdicts.get(f"{metric}/kept_of_teacher")
            if kept is not None:
                print(
                    f"  {source} {metric}: keeps {kept:.2f} of the champion's (target 0.90); against SFT alone: "
                    f"{verdicts[f'{metric}/vs_pruned_sft']}; against the base: {verdicts[f'{metric}/vs_base']}"
                )
        start = time.perf_counter()
        fidelity = top_k_comparison(tmp, domain, distilled, ks)
        print(f"top k against the full distribution ({time.perf_counter() - start:.0f} s, labelled positions):")
        for row in fidelity:
            print(
                f"  k {row['k']:4d}: teacher mass {row['teacher_mass']:.3f}  KL from top k {row['kl_top_k']:.4f}  "
                f"full KL {row['kl_full']:.4f}"
            )
        print(f"time: nexa_job {seconds['nexa_job']:.0f} s, kd_job {seconds['kd_job']:.0f} s")
        if students_k and not students_at_k(defs, instance, tmp, domain, students_k, kd_ops, scores):
            return 1
    return 0


def students_at_k(defs, instance, tmp: Path, domain: str, ks: list[int], kd_ops: dict, first) -> bool:
    """A student trained on the top k of each k (the same recipe, no SFT-only copy), scored beside the first."""
    import polars as pl

    from nexa_core.evaluate.leaderboard import distilled_table

    columns = ["suites acc_norm", "suites accuracy", "test token_f1", "test contains"]
    rows = [("k", *columns)]

    def row(k, scores):
        cells = next(r for r in distilled_table(scores) if r["model"] == "student")
        return (str(k), *(cells.get(column, "-") for column in columns))

    rows.append(row(first_k := kd_ops["teacher_logits"]["config"]["k"], first))
    for k in (k for k in ks if k != first_k):
        student = kd_ops.get("student_distilled", {}).get("config", {})
        scoring = kd_ops.get("distilled_scores", {}).get("config", {})
        ops = {
            "teacher_logits": {"config": {"k": k}},
            "student_distilled": {"config": {**student, "k": k, "compare_sft": False}},
            "distilled_scores": {"config": {**scoring, "roles": ["student"]}},
        }
        start = time.perf_counter()
        result = defs.resolve_job_def("kd_job").execute_in_process(
            partition_key=domain, instance=instance, run_config={"ops": ops}, raise_on_error=False
        )
        outcome = "ok" if result.success else "FAILED"
        print(f"{domain} kd_job at k {k}: {outcome} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        if not result.success:
            return False
        scores = pl.read_delta(str(tmp / "delta" / "nexa" / "distilled_scores")).filter(pl.col("domain") == domain)
        rows.append(row(k, scores))
    print(f"{domain}: students trained on the teacher's top k, each k its own student (mean [95% interval])")
    for cells in rows:
        print("  " + "  ".join(f"{c:<22}" for c in cells))
    return True


if __name__ == "__main__":
    sys.exit(main())
