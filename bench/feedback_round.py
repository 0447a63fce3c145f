"""Base vs trained student on the test split and on the benchmark suites, and the weak topics before
and after one feedback round.

Usage: python bench/feedback_round.py [DOMAIN ...] [--steps N] [--smoke]

Runs the whole graph (nexa_job) for each domain on the offline defaults (the main command's
settings), then one round of the loop (round_job), into a temporary Delta root and Dagster home, and
prints from eval_history and benchmark_history: for round 0 and round 1, the student beside the model
after reading and the off-the-shelf base on the test split and the suites with 95% bootstrap intervals
(nexa_core.evaluate.leaderboard.lift_rows, as the main command prints them), and the score on the topics round 0
found weak, before and after the feedback round, beside the base's. --smoke: one domain, the config-built
student, a few steps of reading and training, to check the benchmark runs (its figures mean nothing).
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from isolated import isolated_graph, print_machine, smoke_config  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domains", nargs="*", default=["physics", "chemistry", "biology"])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the train config's)")
    parser.add_argument("--smoke", action="store_true", help="physics, a small student, 4 steps each")
    args = parser.parse_args()
    if args.smoke:
        args.domains, args.steps = args.domains[:1] if len(args.domains) < 3 else ["physics"], args.steps or 4
    print_machine()
    tmp, instance, defs = isolated_graph("nexa-feedback-", args.domains)
    import polars as pl

    config = {"ops": {"raw_documents": {"config": {"raw_root": str(ROOT / "data" / "raw")}}}}
    if args.steps:
        config["ops"]["student_checkpoint"] = {"config": {"max_steps": args.steps}}
    if args.smoke:
        config["ops"] |= smoke_config(args.steps)
    round_config = {"ops": {k: v for k, v in config["ops"].items() if k not in ("raw_documents", "student_base")}}
    weak: dict[str, dict] = {}
    for domain in args.domains:
        for job, run_config in (("nexa_job", config), ("round_job", round_config)):
            start = time.perf_counter()
            result = defs.resolve_job_def(job).execute_in_process(
                partition_key=domain, instance=instance, run_config=run_config, raise_on_error=False
            )
            print(
                f"{domain} {job}: {'ok' if result.success else 'FAILED'} in {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
            )
            if job == "nexa_job":
                meta = result.asset_materializations_for_node("feedback_set")[0].metadata
                weak[domain] = meta["weak_topics"].value
            if not result.success:
                return 1

    from nexa_core.evaluate.leaderboard import lift_rows, lift_text

    history = pl.read_delta(str(tmp / "delta" / "nexa" / "eval_history"))
    latest = history.sort("created_at").unique(["domain", "round", "model_role", "topic", "metric"], keep="last")
    bench = pl.read_delta(str(tmp / "delta" / "nexa" / "benchmark_history"))
    checkpoints = pl.read_delta(str(tmp / "delta" / "nexa" / "checkpoint_history")).sort("domain", "round")
    print(
        f"\nThe student beside the model after reading (read) and the off-the-shelf base, rounds 0 and 1; "
        f"mean [95% bootstrap interval]; Delta root {tmp / 'delta'}"
    )
    print(lift_text(lift_rows(history, bench, checkpoints["checkpoint_id"].to_list())))
    print("\nTopics round 0 found weak: token F1 of the base and of the student before (round 0) and after (round 1)")
    for domain, topics in weak.items():
        for topic in topics:
            rows = latest.filter(
                (pl.col("domain") == domain) & (pl.col("topic") == topic) & (pl.col("metric") == "token_f1")
            ).sort("round", "model_role")
            scores = "  ".join(
                f"{r['model_role']} round {r['round']}: {r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                for r in rows.filter((pl.col("model_role") == "student") | (pl.col("round") == 0)).iter_rows(named=True)
            )
            print(f"  {domain:10s} {topic:24s} n={rows['n'][0]}  {scores}")
        if not topics:
            print(f"  {domain:10s} (no weak topic)")
    sft = pl.read_delta(str(tmp / "delta" / "nexa" / "sft_dataset"))
    print(
        "\nSFT train examples per domain and round 1 origin: "
        + ", ".join(
            f"{d}: {g.filter(pl.col('split') == 'train').height} "
            f"({g.filter(pl.col('feedback_round').is_not_null()).height} from feedback)"
            for (d,), g in sft.group_by(["domain"], maintain_order=True)
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
