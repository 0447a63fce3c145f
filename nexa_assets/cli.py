"""`nexa-run`: materialize the whole graph (raw text, SFT sets, a student checkpoint, its evaluation,
the leaderboard and the feedback set) for every domain under the raw root, and print where the
tables are, how many rows each partition has, and how each student scores next to its base model.
`nexa-distill` is the same with --job distill_job (no training, no evaluation)."""

import argparse
import os
import sys
import uuid
from pathlib import Path

from nexa_core.progress import parse_progress
from nexa_core.tables import BENCHMARK_HISTORY, EVAL_HISTORY, LEADERBOARD, ROUND_TABLES, STUDENT_CHECKPOINT
from resources.instance import write_instance_file


def ensure_dagster_home(home: Path, postgres: bool = False) -> Path:
    """The Dagster home (Environment.dagster_home) with its instance file (the project's dagster.yaml,
    Postgres storage when Environment.postgres), exported as DAGSTER_HOME for DagsterInstance.get()."""
    os.environ["DAGSTER_HOME"] = str(home)
    write_instance_file(home, postgres)
    return home


def ops_config(defs, job_name: str, settings: list[str]) -> dict:
    """--set ASSET.KEY=YAML as run config: a setting of the asset's config (dotted for nested keys), e.g.
    student_checkpoint.num_train_epochs=1 or student_checkpoint.lora.r=8; a misspelt one names the closest."""
    from nexa_assets.settings import node_settings
    from nexa_forge.settings import SettingError, add_setting, setting_value

    ops: dict = {}
    fields = node_settings(defs.resolve_job_def(job_name).graph.node_defs)
    for item in settings:
        target, sep, value = item.partition("=")
        try:
            if not sep:
                raise SettingError("expected ASSET.KEY=VALUE, e.g. student_checkpoint.num_train_epochs=1")
            add_setting(ops, fields, job_name, target, setting_value(value))
        except SettingError as exc:
            raise SystemExit(f"--set {item}: {exc}") from None
    return ops


def stage_lines(entries) -> list[str]:
    """One line per stage of a finished run: its name, how it ended and how long it took."""
    started, lines = {}, []
    for entry in entries:
        kind = entry.dagster_event.event_type_value if entry.dagster_event else None
        if kind == "STEP_START":
            started[entry.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in started:
            status = "ok" if kind == "STEP_SUCCESS" else "FAILED"
            lines.append((entry.step_key, status, entry.timestamp - started[entry.step_key]))
    width = max((len(step) for step, _, _ in lines), default=0)
    return [f"  {step:{width}s} {status:6s} {seconds:6.1f} s" for step, status, seconds in lines]


def run_printing_progress(job, domain: str, instance, run_config: dict, echo: bool = True):
    """The job for one domain, in this process; with `echo` the stages' progress lines (steps done, tokens/s, time
    left: nexa_core/progress.py) are printed as they reach the run's event log (the whole log goes to its file)."""
    run_id = str(uuid.uuid4())
    if echo:
        instance.add_event_listener(run_id, print_progress)
    return job.execute_in_process(
        partition_key=domain, instance=instance, raise_on_error=False, run_config=run_config, run_id=run_id
    )


def print_progress(entry) -> None:
    if parse_progress(entry.user_message):
        print(f"  {entry.user_message}", flush=True)


def write_run_log(entries, path: Path) -> None:
    """Every event of the run (Dagster's, the stages' and the trainer's logs) as text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for entry in entries:
            fh.write(
                f"{entry.timestamp:.3f} {entry.level} {entry.step_key or '-'} "
                f"{entry.dagster_event.event_type_value + ' ' if entry.dagster_event else ''}"
                f"{entry.user_message}\n"
            )


def run_parser(default_job: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("domains", nargs="*", help="domains to run (default: every folder under the raw root)")
    parser.add_argument(
        "--job",
        default=default_job,
        choices=["nexa_job", "distill_job", "round_job"],
        help="round_job: the next round of the feedback loop (teacher_inputs and everything after, no release)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ASSET.KEY=VALUE",
        help="a stage's setting, e.g. student_checkpoint.num_train_epochs=1 (repeatable)",
    )
    parser.add_argument(
        "--release",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after nexa_job, offer each domain's checkpoint to the promotion gate (release_job); a refusal "
        "changes nothing and is reported, not a failure (--no-release: stop at the evaluation)",
    )
    parser.add_argument("--verbose", action="store_true", help="print Dagster's event log as it runs")
    return parser


def main(argv: list[str] | None = None, default_job: str = "nexa_job") -> int:
    args = run_parser(default_job).parse_args(argv)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # inherited by the launched stages (training, the merge): a line per stage, not progress bars
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    import dagster as dg

    from nexa_assets.definitions import ENVIRONMENT as env
    from nexa_assets.definitions import defs
    from nexa_assets.partitions import domain_partitions
    from nexa_core.data.documents import domain_folders

    home = ensure_dagster_home(env.dagster_home, env.postgres)
    raw_root = env.raw_root
    domains = args.domains or [folder.name for folder in domain_folders(raw_root)]
    if not domains:
        print(f"no domain folders under {raw_root}", file=sys.stderr)
        return 2
    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(domain_partitions.name))
    instance.add_dynamic_partitions(domain_partitions.name, [d for d in domains if d not in known])
    job = defs.resolve_job_def(args.job)
    ops = ops_config(defs, args.job, args.set)
    if any(node.name == "raw_documents" for node in job.graph.node_defs):
        ops.setdefault("raw_documents", {"config": {}})["config"]["raw_root"] = str(raw_root)
    # The event log goes to a file per run; the terminal gets the stages' progress lines and a line per stage
    run_config = (
        {"ops": ops} if args.verbose else {"ops": ops, "loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    )
    failed = []
    for domain in domains:
        print(f"{domain}: running {args.job} ...", flush=True)
        result = run_printing_progress(job, domain, instance, run_config, echo=not args.verbose)  # verbose: all of it
        checks = [
            e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        bad = [c.check_name for c in checks if not c.passed]
        status = "ok" if result.success and not bad else f"FAILED {bad or ''}"
        log, entries = home / "logs" / f"{domain}-{result.run_id}.log", instance.all_logs(result.run_id)
        write_run_log(entries, log)
        print("\n".join(stage_lines(entries)))
        print(
            f"{domain}: run {result.run_id} {status}; {len(checks) - len(bad)}/{len(checks)} checks passed; log {log}",
            flush=True,
        )
        if status != "ok":
            failed.append(domain)
        elif args.job == "nexa_job" and args.release:
            print(release_line(domain, instance, defs, args.verbose))

    print_summary(defs, domains, home, args.job)
    return 1 if failed else 0


def print_summary(defs, domains: list[str], home: Path, job: str) -> None:
    """The Delta tables with their rows per domain, the checkpoints, the leaderboard and the lift table."""
    import polars as pl

    store = defs.resources["delta"]
    print(f"\nDelta tables under {store.root_uri}/nexa (DAGSTER_HOME={home})")
    for table in ROUND_TABLES:
        if not store.exists(table):
            print(f"  {table:16s} (not written)")
            continue
        frame = store.scan(table)
        if "domain" in frame.collect_schema():
            counts = dict(frame.group_by("domain").len().collect().iter_rows())
            print(
                f"  {table:16s} v{store.version(table)}  "
                + "  ".join(f"{d}={counts.get(d, 0)}" for d in sorted(set(counts) | set(domains)))
            )
        else:
            print(f"  {table:16s} v{store.version(table)}  rows={frame.select(pl.len()).collect().item()}")
    if job != "distill_job" and store.exists(STUDENT_CHECKPOINT):
        print("\nStudent checkpoints")
        for row in store.scan(STUDENT_CHECKPOINT).sort("domain").collect().iter_rows(named=True):
            loss = "-" if row["final_loss"] is None else f"{row['final_loss']:.3f}"  # fewer steps than logging_steps
            print(
                f"  {row['domain']:10s} steps={row['steps']} final_loss={loss} "
                f"device={row['device']} {row['wall_seconds']:.1f}s  {row['artifact_uri']}"
            )
    if job != "distill_job" and store.exists(LEADERBOARD):
        from nexa_assets.evaluate import LEADERBOARD_REPORT
        from nexa_core.evaluate.leaderboard import leaderboard_markdown

        print("\nLeaderboard (test split; mean with 95% bootstrap interval; base = the model the student started from)")
        print(leaderboard_markdown(store.scan(LEADERBOARD).collect()))
        print(f"\nReport: {defs.resources['reports'].path(LEADERBOARD_REPORT)}")
    if job != "distill_job" and store.exists(EVAL_HISTORY):
        print_lift(store, domains)


def release_line(domain: str, instance, defs, verbose: bool) -> str:
    """release_job for the domain: the gate's decision in one line. Its check blocks a refused candidate, so a
    refusal is a failed step that changed nothing: Dagster's error lines for it stay in the run's log."""
    quiet = {} if verbose else {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    result = defs.resolve_job_def("release_job").execute_in_process(
        partition_key=domain, instance=instance, raise_on_error=False, run_config=quiet
    )
    gate = next(
        (
            e.asset_check_evaluation_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and e.asset_check_evaluation_data.check_name == "promotion_gate"
        ),
        None,
    )
    if gate is None:
        return f"{domain}: release_job FAILED before the gate decided; log: dagster run {result.run_id}"
    return f"{domain}: release_job: {gate.description}"


def print_lift(store, domains: list[str]) -> None:
    """Each domain's newest checkpoint beside the model after reading and the off-the-shelf base."""
    import polars as pl

    from nexa_core.evaluate.leaderboard import lift_rows, lift_text

    checkpoints = (
        store.scan(STUDENT_CHECKPOINT).filter(pl.col("domain").is_in(domains)).sort("domain").collect()
        if store.exists(STUDENT_CHECKPOINT)
        else None
    )
    if checkpoints is None or checkpoints.is_empty():
        return
    benchmarks = store.scan(BENCHMARK_HISTORY).collect() if store.exists(BENCHMARK_HISTORY) else None
    rows = lift_rows(store.scan(EVAL_HISTORY).collect(), benchmarks, checkpoints["checkpoint_id"].to_list())
    print(
        "\nThe student beside the model after reading (read) and the off-the-shelf base: mean [95% bootstrap "
        "interval]; lift = the student's interval wholly above the base's"
    )
    print(lift_text(rows))


def distill_main() -> int:
    return main(default_job="distill_job")


if __name__ == "__main__":
    sys.exit(main())
