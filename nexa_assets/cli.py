"""`nexa-run`: materialize the whole graph (raw text, SFT sets, a student checkpoint, its evaluation,
the leaderboard and the feedback set) for every domain under the raw root, and print where the
tables are, how many rows each partition has, and how each student scores next to its base model.
`nexa-distill` is the same with --job distill_job (no training, no evaluation)."""

import argparse
import os
import shutil
import sys
from pathlib import Path

from resources.delta import PROJECT_ROOT


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME, defaulting to .dagster_home in the project, with the project's dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))).resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def main(argv: list[str] | None = None, default_job: str = "nexa_job") -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("domains", nargs="*", help="domains to run (default: every folder under the raw root)")
    parser.add_argument("--job", default=default_job, choices=["nexa_job", "distill_job"])
    args = parser.parse_args(argv)
    home = ensure_dagster_home()

    import dagster as dg
    import polars as pl

    from nexa_assets.definitions import defs
    from nexa_assets.partitions import domain_partitions
    from nexa_assets.sensors import folder_fingerprints

    raw_root = Path(os.environ.get("NEXA_RAW_ROOT", PROJECT_ROOT / "data" / "raw"))
    domains = args.domains or sorted(folder_fingerprints(raw_root))
    if not domains:
        print(f"no domain folders under {raw_root}", file=sys.stderr)
        return 2
    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(domain_partitions.name))
    instance.add_dynamic_partitions(domain_partitions.name, [d for d in domains if d not in known])
    job = defs.resolve_job_def(args.job)
    failed = []
    for domain in domains:
        result = job.execute_in_process(partition_key=domain, instance=instance, raise_on_error=False,
                                        run_config={"ops": {"raw_documents": {"config": {"raw_root": str(raw_root)}}}})
        checks = [e.asset_check_evaluation_data for e in result.all_events
                  if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        bad = [c.check_name for c in checks if not c.passed]
        status = "ok" if result.success and not bad else f"FAILED {bad or ''}"
        print(f"{domain}: run {result.run_id} {status}; {len(checks) - len(bad)}/{len(checks)} checks passed")
        if status != "ok":
            failed.append(domain)

    store = defs.resources["delta"]
    print(f"\nDelta tables under {store.root_uri}/nexa (DAGSTER_HOME={home})")
    for table in ("raw_documents", "raw_quarantine", "teacher_inputs", "teacher_outputs", "filtered_pairs",
                  "sft_dataset", "teacher_cache", "student_base", "student_checkpoint", "eval_predictions",
                  "eval_metrics", "eval_history", "benchmark_scores", "feedback_set", "leaderboard"):
        if not store.exists(table):
            print(f"  {table:16s} (not written)")
            continue
        frame = store.scan(table)
        if "domain" in frame.collect_schema():
            counts = dict(frame.group_by("domain").len().collect().iter_rows())
            print(f"  {table:16s} v{store.version(table)}  "
                  + "  ".join(f"{d}={counts.get(d, 0)}" for d in sorted(set(counts) | set(domains))))
        else:
            print(f"  {table:16s} v{store.version(table)}  rows={frame.select(pl.len()).collect().item()}")
    if args.job == "nexa_job" and store.exists("student_checkpoint"):
        print("\nStudent checkpoints")
        for row in store.scan("student_checkpoint").sort("domain").collect().iter_rows(named=True):
            print(f"  {row['domain']:10s} steps={row['steps']} final_loss={row['final_loss']:.3f} "
                  f"device={row['device']} {row['wall_seconds']:.1f}s  {row['artifact_uri']}")
    if args.job == "nexa_job" and store.exists("leaderboard"):
        from nexa_assets.evaluate import report_path
        from nexa_core.leaderboard import leaderboard_markdown

        print("\nLeaderboard (test split; mean with 95% bootstrap interval; base = the student after reading its "
              "domain, before SFT)")
        print(leaderboard_markdown(store.scan("leaderboard").collect()))
        print(f"\nReport: {report_path()}")
    return 1 if failed else 0


def distill_main() -> int:
    return main(default_job="distill_job")


if __name__ == "__main__":
    sys.exit(main())
