"""The distillation half of the graph: raw text -> teacher inputs -> teacher outputs -> filtered
pairs -> SFT sets, and teacher inputs -> restatements (each passage said again several ways, for the
student to read). Each asset reads its inputs, calls nexa_core, and returns a frame and metadata."""

from pathlib import Path

import dagster as dg
import polars as pl

from nexa_assets.metadata import RAW_FINGERPRINT, versions_read
from nexa_assets.partitions import DELTA_PARTITION, domain_partitions
from nexa_assets.settings import settings_class
from nexa_assets.side_tables import side_table_spec
from nexa_core import schemas
from nexa_core.data.documents import LoadLimits, folder_fingerprint, load_domain
from nexa_core.distill.filters import FilterConfig, filter_pairs, form_counts, reason_counts
from nexa_core.distill.prompts import load_template
from nexa_core.distill.restatements import (
    RestatementConfig,
    parse_restatements,
    restatement_counts,
    restatement_requests,
    screen_restatements,
)
from nexa_core.distill.sft import SplitConfig, build_sft_dataset
from nexa_core.distill.teacher_inputs import PromptConfig, build_teacher_inputs, mix_in_feedback
from nexa_core.settings import from_settings
from nexa_core.tables import RAW_QUARANTINE
from nexa_core.teacher import (
    CollectionStopped,
    TeacherLedger,
    UnpricedBudget,
    collect_responses,
    parse_pairs,
    unpriced_warning,
)
from resources.delta import DeltaStore, table_metadata
from resources.reports import RawFolder
from resources.teacher import TeacherResource

GROUP = "distill"


# Each settings class is made from its nexa_core dataclass (nexa_assets/settings.py), plus what the asset
# resolves itself: raw_root (None: the `raw` resource's folder), the prompt template, and whether to mix in the
# domain's latest feedback set (the next round of the loop).
RawSettings = settings_class(LoadLimits, "RawSettings", raw_root=(str | None, None))
PromptSettings = settings_class(PromptConfig, "PromptSettings", template=(str, "qa_pairs_v1"), feedback=(bool, True))
FilterSettings = settings_class(FilterConfig, "FilterSettings")
MinHashSettings = FilterSettings.model_fields["minhash"].annotation
SplitSettings = settings_class(SplitConfig, "SplitSettings")
RestatementSettings = settings_class(RestatementConfig, "RestatementSettings", template=(str, "restatements_v1"))


# Written by raw_documents in the same step (a report, not a computed asset), so any selection that
# loads documents also stores what it quarantined.
raw_quarantine = side_table_spec(RAW_QUARANTINE, GROUP)


@dg.asset(partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="1")
def raw_documents(context: dg.AssetExecutionContext, config: RawSettings, delta: DeltaStore, raw: RawFolder):
    """Every document of the domain's raw folder; id = hash of domain + text."""
    domain = context.partition_key
    raw_root = Path(config.raw_root or raw.folder)
    fingerprint = folder_fingerprint(raw_root / domain)  # before reading: a file changed meanwhile is seen
    documents, quarantine = load_domain(raw_root, domain, from_settings(LoadLimits, config))
    version = delta.write_domain(RAW_QUARANTINE, domain, quarantine)
    if quarantine.height:
        context.log.warning(
            f"partition {domain}: {quarantine.height} rows quarantined: "
            + "; ".join(
                f"{r['source_path']} row {r['source_row']}: {r['reason']}"
                for r in quarantine.head(5).iter_rows(named=True)
            )
        )
    context.log_event(
        dg.AssetMaterialization(
            asset_key="raw_quarantine",
            partition=domain,
            metadata={
                **table_metadata(quarantine, delta.uri(RAW_QUARANTINE), version),
                "reasons": dict(quarantine.group_by("reason").len().iter_rows()) if quarantine.height else {},
            },
        )
    )
    return dg.Output(
        documents,
        metadata={
            "documents": documents.height,
            "quarantined": quarantine.height,
            "topics": dict(documents.group_by("topic").len().sort("topic").iter_rows()),
            "raw_folder": str(raw_root / domain),
            RAW_FINGERPRINT: fingerprint,
        },
    )


@dg.asset(partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="1")
def teacher_inputs(
    context: dg.AssetExecutionContext, config: PromptSettings, delta: DeltaStore, raw_documents: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    """One teacher request per passage, rendered from a versioned prompt template, plus the requests of
    the domain's latest feedback set. The feedback set is read from its Delta table, not declared as
    an input: it lies downstream, and the graph stays acyclic. Which version fed this round is in
    the metadata."""
    domain = context.partition_key
    template = load_template(config.template)
    requests = build_teacher_inputs(raw_documents, template, from_settings(PromptConfig, config))
    feedback, version = schemas.empty(schemas.TEACHER_INPUTS), None
    if config.feedback and delta.exists("feedback_set"):
        feedback, version = delta.read_partition("feedback_set", domain), delta.version("feedback_set")
    requests, fed_by = mix_in_feedback(requests, feedback, version)
    if fed_by["feedback_requests"]:
        context.log.info(
            f"partition {domain}: round {fed_by['round']} mixes in {fed_by['feedback_requests']} "
            f"requests of feedback_set v{version}"
        )
    return dg.Output(
        requests,
        metadata={
            "requests": requests.height,
            **fed_by,
            "template": template.name,
            "template_sha256": template.sha256,
            **versions_read(delta, "raw_documents"),
        },
    )


@dg.asset(
    partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="2", kinds={"openai"}
)
def teacher_outputs(
    context: dg.AssetExecutionContext, teacher: TeacherResource, delta: DeltaStore, teacher_inputs: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    """One teacher response per request, served from the response cache when it was paid for before."""
    outputs, stats = collected(context, teacher, delta, teacher_inputs, parse_pairs)
    return dg.Output(
        outputs,
        metadata={
            "backend": teacher.backend,
            "model": teacher.model,
            "mode": teacher.mode,
            **collect_metadata(stats),
            "total_prompt_tokens": int(outputs["prompt_tokens"].sum() or 0),
            "total_completion_tokens": int(outputs["completion_tokens"].sum() or 0),
            "total_cost_usd": float(outputs["cost_usd"].sum() or 0.0),
            "unusable": dict(outputs.group_by("unusable_reason").len().drop_nulls().iter_rows()),
            **versions_read(delta, "teacher_inputs", TeacherLedger.CACHE),
        },
    )


def collected(
    context, teacher: TeacherResource, delta: DeltaStore, requests: pl.DataFrame, validate, max_tokens: int = 0
):
    """(outputs, stats): the teacher's response to each request through the collector (response cache,
    retries, spend budget, the partition's ledger); a stopped collection is a dg.Failure with its counts.
    `max_tokens` raises a language model's room for a reply (the params are part of the cache key)."""
    domain = context.partition_key
    client, pricing, policy, params = teacher.client(), teacher.pricing(), teacher.policy(), teacher.params()
    if "max_tokens" in params:
        params["max_tokens"] = max(params["max_tokens"], max_tokens)
    try:
        if warning := unpriced_warning(client, pricing, policy.budget_usd, f"partition {domain}"):
            context.log.warning(warning)
    except UnpricedBudget as exc:
        raise dg.Failure(str(exc)) from exc
    try:
        outputs, stats = collect_responses(
            requests,
            client,
            TeacherLedger(delta.tables(), domain),
            params=params,
            pricing=pricing,
            policy=policy,
            validate=validate,
            log=context.log.info,
        )
    except CollectionStopped as exc:
        raise dg.Failure(str(exc), metadata=collect_metadata(exc.stats)) from exc
    return outputs.with_columns(pl.lit(domain).alias("domain")), stats


def collect_metadata(stats) -> dict:
    """This run's collection in numbers: the UI plots each one over materializations."""
    return {
        "requests": stats.requests,
        "new_calls": stats.new_calls,
        "cache_hits": stats.cache_hits,
        "recovered": stats.recovered,
        "attempts": stats.attempts,
        "retries": sum(stats.retries.values()),
        "retries_by_reason": dict(stats.retries),
        "unusable_by_reason": dict(stats.unusable),
        "quarantined": stats.quarantined,
        "failed": stats.failed,
        "batches_submitted": stats.batches_submitted,
        "batches_reused": stats.batches_reused,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "new_cost_usd": round(stats.cost_usd, 6),
        "seconds": round(stats.seconds, 3),
        "requests_per_second": round(stats.new_calls / stats.seconds, 2) if stats.seconds else 0.0,
    }


@dg.asset(partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="1")
def filtered_pairs(
    context: dg.AssetExecutionContext,
    config: FilterSettings,
    delta: DeltaStore,
    teacher_inputs: pl.DataFrame,
    teacher_outputs: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Parsed pairs, each kept or carrying the reason it was dropped."""
    pairs = filter_pairs(teacher_outputs, teacher_inputs, from_settings(FilterConfig, config))
    counts = reason_counts(pairs)
    for row in pairs.filter(pl.col("reject_reason") == "unparseable_response").head(5).iter_rows(named=True):
        context.log.warning(row["reject_detail"])
    return dg.Output(
        pairs,
        metadata={
            "kept": counts["kept"],
            "dropped": pairs.height - counts["kept"],
            **{f"dropped/{reason}": n for reason, n in counts.items() if reason != "kept"},
            "kept_by_form": form_counts(pairs),
            **versions_read(delta, "teacher_inputs", "teacher_outputs"),
        },
    )


@dg.asset(partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="1")
def sft_dataset(
    context: dg.AssetExecutionContext, config: SplitSettings, delta: DeltaStore, filtered_pairs: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    """Chat-format SFT examples, split by source document."""
    sft = build_sft_dataset(filtered_pairs, from_settings(SplitConfig, config))
    splits = dict(sft.group_by("split").len().iter_rows())
    return dg.Output(
        sft,
        metadata={
            **{f"examples/{s}": splits.get(s, 0) for s in ("train", "validation", "test")},
            "documents": sft["doc_id"].n_unique(),
            **versions_read(delta, "filtered_pairs"),
        },
    )


@dg.asset(
    partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="1", kinds={"openai"}
)
def restatements(
    context: dg.AssetExecutionContext,
    config: RestatementSettings,
    teacher: TeacherResource,
    delta: DeltaStore,
    teacher_inputs: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Each corpus passage restated several ways by the teacher (other words, other order, its facts as
    questions and as statements, from their other side), asked with a versioned prompt through the same
    collector as teacher_outputs (cache, retries, budget); each restatement kept or carrying its reason.
    The training stages read the kept ones (nexa_core.distill.restatements.read_restatements)."""
    template = load_template(config.template)
    cfg = from_settings(RestatementConfig, config)
    requests = restatement_requests(teacher_inputs, template, cfg)
    outputs, stats = collected(context, teacher, delta, requests, parse_restatements, cfg.max_tokens)
    rows = screen_restatements(requests, outputs, cfg)
    counts = restatement_counts(rows)
    return dg.Output(
        rows,
        metadata={
            "passages": requests.height,
            "kept": counts["kept"],
            "dropped": rows.height - counts["kept"],
            **{f"dropped/{reason}": n for reason, n in counts.items() if reason != "kept"},
            "kept_by_kind": form_counts(rows),
            "template": template.name,
            "template_sha256": template.sha256,
            "model": teacher.model,
            **collect_metadata(stats),
            **versions_read(delta, "teacher_inputs", TeacherLedger.CACHE),
        },
    )


DISTILL_ASSETS = [
    raw_documents,
    raw_quarantine,
    teacher_inputs,
    teacher_outputs,
    filtered_pairs,
    sft_dataset,
    restatements,
]
