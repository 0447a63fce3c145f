"""Sensors. The raw folder sensor: a new folder under the raw root becomes a domain partition and is
materialized; a changed file in a known domain re-runs that domain. The feedback loop sensor: a new
feedback set requests the next round for its domain, until a stop rule says enough. Their settings
come as parameters (nexa_assets/definitions.py reads them from the environment)."""

import json
from pathlib import Path

import dagster as dg

from nexa_assets.metadata import RAW_FINGERPRINT
from nexa_assets.partitions import domain_partitions
from nexa_core.data.documents import domain_folders, folder_fingerprint
from nexa_core.evaluate.feedback import next_round_blocker


def materialized_fingerprint(instance: dg.DagsterInstance, domain: str) -> str | None:
    """The folder fingerprint the domain's latest raw_documents materialization recorded."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_documents"), asset_partitions=[domain]), limit=1
    ).records
    value = records[0].asset_materialization.metadata.get(RAW_FINGERPRINT) if records else None
    return value.value if value else None


def build_raw_folder_sensor(job, raw_root: Path) -> dg.SensorDefinition:
    # The runs read the folder the sensor watches, not raw_documents' default
    run_config = {"ops": {"raw_documents": {"config": {"raw_root": str(raw_root)}}}}

    @dg.sensor(
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Adds a domain partition for each new folder in {raw_root} and re-runs a domain "
        "whose files changed since its last raw_documents.",
    )
    def raw_folder_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        seen = json.loads(context.cursor) if context.cursor else {}  # domain -> fingerprint acted on
        now = {folder.name: folder_fingerprint(folder) for folder in domain_folders(raw_root)}
        known = set(context.instance.get_dynamic_partitions(domain_partitions.name))
        new_domains = sorted(d for d in now if d not in known)
        # An empty cursor (a fresh `dagster dev`) falls back on what each domain's last run read
        changed = [
            d
            for d, fp in sorted(now.items())
            if seen.get(d) != fp and materialized_fingerprint(context.instance, d) != fp
        ]
        runs = [
            dg.RunRequest(
                partition_key=d,
                run_key=f"{d}:{now[d]}",
                run_config=run_config,
                tags={"nexa/reason": "new domain" if d in new_domains else "raw files changed"},
            )
            for d in changed
        ]
        return dg.SensorResult(
            run_requests=runs,
            cursor=json.dumps(now),
            dynamic_partitions_requests=[domain_partitions.build_add_request(new_domains)] if new_domains else [],
        )

    return raw_folder_sensor


ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def newest_feedback(instance: dg.DagsterInstance, domain: str) -> tuple[int | None, dict]:
    """(storage id, metadata values) of the domain's newest feedback_set materialization; (None, {}) before one."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("feedback_set"), asset_partitions=[domain]), limit=1
    ).records
    if not records:
        return None, {}
    return records[0].storage_id, {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def next_round_request(domain: str, storage_id: int, meta: dict) -> dg.RunRequest:
    """The next round of the domain, keyed by the feedback set that asked for it (a tick never asks twice)."""
    next_round = meta["round"] + 1
    return dg.RunRequest(
        partition_key=domain,
        run_key=f"{domain}:round-{next_round}:feedback-{storage_id}",
        tags={
            "nexa/round": str(next_round),
            "nexa/feedback_version": str(meta.get("delta_version")),
            "nexa/feedback_round": str(meta["round"]),
        },
    )


def build_feedback_loop_sensor(job, max_rounds: int, min_improvement: float):
    @dg.sensor(
        job=job,
        minimum_interval_seconds=30,
        # Off until a user turns it on (UI: Automation; or `dagster sensor start feedback_loop_sensor`): on,
        # it would start a round of training for every domain whose feedback set it has not seen, minutes
        # of CPU per domain that nobody asked for by opening the UI after the main command.
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Off by default; turn it on to run the loop on its own. A new feedback_set requests the next "
        f"round (teacher -> ... -> feedback) for its domain; stops at max_rounds={max_rounds}, when a round "
        f"does not improve by more than {min_improvement}, or when the feedback set is empty. One round per "
        f"domain at a time. Turned on, it acts on the feedback sets it has not seen, those of earlier runs too.",
    )
    def feedback_loop_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        handled = json.loads(context.cursor) if context.cursor else {}  # domain -> storage id acted on
        runs, notes = [], []
        for domain in sorted(context.instance.get_dynamic_partitions(domain_partitions.name)):
            storage_id, meta = newest_feedback(context.instance, domain)
            if storage_id is None or handled.get(domain, 0) >= storage_id:
                continue
            blocker = next_round_blocker(
                meta["round"],
                meta["new_requests"],
                meta.get("score"),
                meta.get("previous_score"),
                max_rounds,
                min_improvement,
            )
            if blocker:
                handled[domain] = storage_id
                notes.append(f"{domain}: stopped, {blocker}")
                continue
            if context.instance.get_run_records(
                dg.RunsFilter(tags={"dagster/partition": domain}, statuses=ACTIVE), limit=1
            ):
                notes.append(f"{domain}: a run of this domain is in progress; the next round waits for it")
                continue  # the cursor stays, so the next tick asks again
            handled[domain] = storage_id
            runs.append(next_round_request(domain, storage_id, meta))
            notes.append(f"{domain}: round {meta['round'] + 1} requested (feedback set v{meta.get('delta_version')})")
        for note in notes:
            context.log.info(note)
        return dg.SensorResult(
            run_requests=runs,
            cursor=json.dumps(handled),
            skip_reason=None if runs else "; ".join(notes) or "no new feedback set",
        )

    return feedback_loop_sensor
