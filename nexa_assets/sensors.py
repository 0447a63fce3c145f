"""The raw folder sensor: a new folder under data/raw/ becomes a domain partition and is
materialized; a changed file in a known domain re-runs that domain."""


import hashlib
import json
import os
from pathlib import Path

import dagster as dg

from nexa_assets.partitions import domain_partitions
from nexa_core.documents import supported
from resources.delta import PROJECT_ROOT


def folder_fingerprints(raw_root: Path) -> dict[str, str]:
    """domain -> hash of (relative path, size, mtime) of every supported file."""
    prints = {}
    if not raw_root.is_dir():
        return prints
    for folder in sorted(p for p in raw_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.rglob("*") if supported(p)):
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        prints[folder.name] = digest.hexdigest()
    return prints


def build_raw_folder_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(job=job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Adds a domain partition for each new folder in data/raw and re-runs a domain "
                           "whose files changed.")
    def raw_folder_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        raw_root = Path(os.environ.get("NEXA_RAW_ROOT", PROJECT_ROOT / "data" / "raw"))
        seen = json.loads(context.cursor) if context.cursor else {}
        now = folder_fingerprints(raw_root)
        known = set(context.instance.get_dynamic_partitions(domain_partitions.name))
        new_domains = sorted(d for d in now if d not in known)
        runs = [dg.RunRequest(partition_key=d, run_key=f"{d}:{fp}", tags={"nexa/reason": "new domain"
                              if d in new_domains else "raw files changed"})
                for d, fp in sorted(now.items()) if seen.get(d) != fp]
        return dg.SensorResult(
            run_requests=runs, cursor=json.dumps(now),
            dynamic_partitions_requests=[domain_partitions.build_add_request(new_domains)] if new_domains else [])

    return raw_folder_sensor
