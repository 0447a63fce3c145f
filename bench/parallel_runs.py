"""Throughput of parallel distillation runs against one: N `dagster asset materialize` processes of the
distill group (raw text -> SFT sets), one domain each, on a fresh Delta root and a fresh instance, as a
backfill launches them; then every table is checked to hold exactly each domain's rows.

Usage: python bench/parallel_runs.py [--runs 8] [--smoke]

Prints runs per minute for one run alone and for N at once, measured in this run, and the commits.
delta-rs rebases a commit over concurrent commits to other partitions inside the write and does not
report how often; what this prints is whether any write failed and how many commits each table took.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from corpus import machine_line

TABLES = ["raw_documents", "teacher_inputs", "teacher_outputs", "filtered_pairs", "sft_dataset", "teacher_cache"]


def launch(domains: list[str], work: Path, raw: Path, label: str) -> tuple[float, list[str]]:
    """Start one materialize process per domain at once; (wall seconds, failures)."""
    delta, home = work / f"delta-{label}", work / f"home-{label}"
    from resources.instance import write_instance_file

    write_instance_file(home, postgres=False)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "NEXA_DELTA_ROOT": str(delta),
        "NEXA_RAW_ROOT": str(raw),
        "HF_HUB_OFFLINE": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "nexa-domains"), "add", *domains], env=env, check=True, capture_output=True)
    config = '{"ops": {"raw_documents": {"config": {"raw_root": "%s"}}}}' % raw
    start = time.perf_counter()
    procs = {
        d: subprocess.Popen(
            [
                str(bin_dir / "dagster"),
                "asset",
                "materialize",
                "--select",
                "group:distill",
                "--partition",
                d,
                "-m",
                "nexa_assets.definitions",
                "--config-json",
                config,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in domains
    }
    failures = [f"{d}: {p.communicate()[1][-400:]}" for d, p in procs.items() if p.wait() != 0]
    return time.perf_counter() - start, failures


def check_tables(delta: Path, domains: list[str]) -> dict[str, int]:
    """Every table holds each domain's rows; its number of commits."""
    import polars as pl
    from deltalake import DeltaTable

    versions = {}
    for table in TABLES:
        uri = str(delta / "nexa" / table)
        frame = pl.read_delta(uri)
        if "domain" in frame.columns:
            counts = dict(frame.group_by("domain").len().iter_rows())
            assert set(counts) == set(domains), f"{table}: domains {sorted(counts)}, expected {domains}"
            assert len(set(counts.values())) == 1, f"{table}: rows per domain differ: {counts}"
        versions[table] = DeltaTable(uri).version() + 1
    return versions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="2 runs at once")
    args = parser.parse_args()
    runs = 2 if args.smoke else args.runs
    print(machine_line(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="nexa-bench-parallel-"))
    raw = work / "raw"
    domains = [f"field{i}" for i in range(runs)]
    for domain in ["alone", *domains]:  # the physics sample under other names: ids hash the domain in
        shutil.copytree(ROOT / "data" / "raw" / "physics", raw / domain)
    alone, failed_alone = launch(["alone"], work, raw, "one")
    together, failed = launch(domains, work, raw, "many")
    if failed_alone or failed:
        print("FAILED runs:\n" + "\n".join(failed_alone + failed))
        return 1
    commits = check_tables(work / "delta-many", domains)
    print(f"{'':24s} {'wall s':>8s} {'runs/min':>9s}")
    print(f"{'1 run alone':24s} {alone:8.1f} {60 / alone:9.2f}")
    print(
        f"{f'{runs} runs at once':24s} {together:8.1f} {60 * runs / together:9.2f}   "
        f"({60 * runs / together / (60 / alone):.2f}x the throughput of one)"
    )
    print(
        f"failed writes: 0; every table holds each of the {runs} domains' rows; commits per table: "
        + ", ".join(f"{t} {n}" for t, n in commits.items())
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
