"""The distillation half of the graph: raw text -> teacher inputs -> teacher outputs -> filtered
pairs -> SFT sets. Each asset reads its inputs, calls nexa_core, and returns a frame and metadata."""


from pathlib import Path

import dagster as dg
import polars as pl

from nexa_assets.metadata import versions_read
from nexa_assets.partitions import DELTA_PARTITION, domain_partitions
from nexa_core import schemas
from nexa_core.dedup import MinHashConfig
from nexa_core.documents import LoadLimits, load_domain
from nexa_core.filters import FilterConfig, filter_pairs, form_counts, reason_counts
from nexa_core.prompts import load_template
from nexa_core.sft import SplitConfig, build_sft_dataset
from nexa_core.teacher import CollectionStopped, TeacherLedger, collect_responses, parse_pairs
from nexa_core.teacher_inputs import build_teacher_inputs
from resources.delta import PROJECT_ROOT, DeltaStore, table_metadata
from resources.teacher import TeacherResource

GROUP = "distill"


class RawConfig(dg.Config):
    raw_root: str = str(PROJECT_ROOT / "data" / "raw")
    max_doc_chars: int = 200_000
    max_file_bytes: int = 50_000_000


class PromptConfig(dg.Config):
    template: str = "qa_pairs_v1"
    max_pairs_per_passage: int = 16  # several forms of each fact (nexa_core/question_forms.py)
    max_passage_chars: int = 1200
    feedback: bool = True  # mix in the domain's latest feedback set (the next round of the loop)


class FilterSettings(dg.Config):
    min_grounding: float = 0.6
    max_answer_chars: int = 800
    near_duplicate_threshold: float = 0.5


class SplitSettings(dg.Config):
    validation: float = 0.1
    test: float = 0.2
    seed: int = 17
    min_topic_documents: int = 3  # smaller topics are all train (unless the domain has no held-out data)


# Written by raw_documents in the same step (a report, not a computed asset), so any selection that
# loads documents also stores what it quarantined.
raw_quarantine = dg.AssetSpec(
    "raw_quarantine", partitions_def=domain_partitions, group_name=GROUP, kinds={"delta"},
    description="Files and rows of data/raw/<domain> that could not become documents, with the reason.")


@dg.asset(partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="1")
def raw_documents(context: dg.AssetExecutionContext, config: RawConfig, delta: DeltaStore):
    """Every document of the domain's raw folder; id = hash of domain + text."""
    domain = context.partition_key
    documents, quarantine = load_domain(Path(config.raw_root), domain,
                                        LoadLimits(max_file_bytes=config.max_file_bytes,
                                                   max_doc_chars=config.max_doc_chars))
    version = delta.write_domain("raw_quarantine", domain, quarantine)
    if quarantine.height:
        context.log.warning(f"partition {domain}: {quarantine.height} rows quarantined: "
                            + "; ".join(f"{r['source_path']} row {r['source_row']}: {r['reason']}"
                                        for r in quarantine.head(5).iter_rows(named=True)))
    context.log_event(dg.AssetMaterialization(
        asset_key="raw_quarantine", partition=domain,
        metadata={**table_metadata(quarantine, delta.uri("raw_quarantine"), version),
                  "reasons": dict(quarantine.group_by("reason").len().iter_rows()) if quarantine.height else {}}))
    return dg.Output(documents, metadata={
        "documents": documents.height, "quarantined": quarantine.height,
        "topics": dict(documents.group_by("topic").len().sort("topic").iter_rows()),
        "raw_folder": str(Path(config.raw_root) / domain)})


@dg.asset(partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="1")
def teacher_inputs(context: dg.AssetExecutionContext, config: PromptConfig, delta: DeltaStore,
                   raw_documents: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """One teacher request per passage, rendered from a versioned prompt template, plus the requests of
    the domain's latest feedback set. The feedback set is read from its Delta table, not declared as
    an input: it lies downstream, and the graph stays acyclic. Which version fed this round is in
    the metadata."""
    domain = context.partition_key
    template = load_template(config.template)
    requests = build_teacher_inputs(raw_documents, template, max_pairs=config.max_pairs_per_passage,
                                    max_chars=config.max_passage_chars)
    feedback, fed_by = schemas.empty(schemas.TEACHER_INPUTS), {}
    if config.feedback and delta.exists("feedback_set"):
        feedback = schemas.conform(delta.read_partition("feedback_set", domain), schemas.TEACHER_INPUTS)
        if feedback.height:
            fed_by = {"feedback_set_version": delta.version("feedback_set"),
                      "feedback_round": int(feedback["feedback_round"].max())}
            context.log.info(f"partition {domain}: round {fed_by['feedback_round'] + 1} mixes in {feedback.height} "
                             f"requests of feedback_set v{fed_by['feedback_set_version']}")
    requests = pl.concat([requests, feedback.join(requests.select("request_id"), on="request_id", how="anti")])
    return dg.Output(requests, metadata={
        "requests": requests.height, "feedback_requests": feedback.height,
        "round": fed_by.get("feedback_round", -1) + 1, **fed_by,
        "template": template.name, "template_sha256": template.sha256, **versions_read(delta, "raw_documents")})


@dg.asset(partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="2",
          kinds={"openai"})
def teacher_outputs(context: dg.AssetExecutionContext, teacher: TeacherResource, delta: DeltaStore,
                    teacher_inputs: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """One teacher response per request, served from the response cache when it was paid for before."""
    domain = context.partition_key
    pricing, policy = teacher.pricing(), teacher.policy()
    if teacher.backend != "heuristic" and not pricing.known:
        if policy.budget_usd is not None:
            raise dg.Failure(f"partition {domain}: teacher budget_usd is set but model '{teacher.model}' has no price; "
                             "add it to the teacher resource's prices (USD per 1M input/output tokens)")
        context.log.warning(f"partition {domain}: no price for model '{teacher.model}'; cost is recorded as 0")
    try:
        outputs, stats = collect_responses(
            teacher_inputs, teacher.client(), TeacherLedger(delta.tables(), domain), params=teacher.params(),
            pricing=pricing, policy=policy, validate=parse_pairs, log=context.log.info)
    except CollectionStopped as exc:
        raise dg.Failure(str(exc), metadata=collect_metadata(exc.stats)) from exc
    outputs = outputs.with_columns(pl.lit(domain).alias("domain"))
    return dg.Output(outputs, metadata={
        "backend": teacher.backend, "model": teacher.model, "mode": teacher.mode, **collect_metadata(stats),
        "total_prompt_tokens": int(outputs["prompt_tokens"].sum() or 0),
        "total_completion_tokens": int(outputs["completion_tokens"].sum() or 0),
        "total_cost_usd": float(outputs["cost_usd"].sum() or 0.0),
        "unusable": dict(outputs.group_by("unusable_reason").len().drop_nulls().iter_rows()),
        **versions_read(delta, "teacher_inputs", TeacherLedger.CACHE)})


def collect_metadata(stats) -> dict:
    """This run's collection in numbers: the UI plots each one over materializations."""
    return {"requests": stats.requests, "new_calls": stats.new_calls, "cache_hits": stats.cache_hits,
            "recovered": stats.recovered, "attempts": stats.attempts, "retries": sum(stats.retries.values()),
            "retries_by_reason": dict(stats.retries), "unusable_by_reason": dict(stats.unusable),
            "quarantined": stats.quarantined, "failed": stats.failed, "batches_submitted": stats.batches_submitted,
            "batches_reused": stats.batches_reused, "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens, "new_cost_usd": round(stats.cost_usd, 6),
            "seconds": round(stats.seconds, 3),
            "requests_per_second": round(stats.new_calls / stats.seconds, 2) if stats.seconds else 0.0}


@dg.asset(partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="1")
def filtered_pairs(context: dg.AssetExecutionContext, config: FilterSettings, delta: DeltaStore,
                   teacher_inputs: pl.DataFrame, teacher_outputs: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Parsed pairs, each kept or carrying the reason it was dropped."""
    cfg = FilterConfig(min_grounding=config.min_grounding, max_answer_chars=config.max_answer_chars,
                       minhash=MinHashConfig(threshold=config.near_duplicate_threshold))
    pairs = filter_pairs(teacher_outputs, teacher_inputs, cfg)
    counts = reason_counts(pairs)
    for row in pairs.filter(pl.col("reject_reason") == "unparseable_response").head(5).iter_rows(named=True):
        context.log.warning(row["reject_detail"])
    return dg.Output(pairs, metadata={
        "kept": counts["kept"], "dropped": pairs.height - counts["kept"],
        **{f"dropped/{reason}": n for reason, n in counts.items() if reason != "kept"},
        "kept_by_form": form_counts(pairs),
        **versions_read(delta, "teacher_inputs", "teacher_outputs")})


@dg.asset(partitions_def=domain_partitions, group_name=GROUP, metadata=DELTA_PARTITION, code_version="1")
def sft_dataset(context: dg.AssetExecutionContext, config: SplitSettings, delta: DeltaStore,
                filtered_pairs: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Chat-format SFT examples, split by source document."""
    sft = build_sft_dataset(filtered_pairs, SplitConfig(validation=config.validation, test=config.test,
                                                        seed=config.seed,
                                                        min_topic_documents=config.min_topic_documents))
    splits = dict(sft.group_by("split").len().iter_rows())
    return dg.Output(sft, metadata={
        **{f"examples/{s}": splits.get(s, 0) for s in ("train", "validation", "test")},
        "documents": sft["doc_id"].n_unique(), **versions_read(delta, "filtered_pairs")})


DISTILL_ASSETS = [raw_documents, raw_quarantine, teacher_inputs, teacher_outputs, filtered_pairs, sft_dataset]
