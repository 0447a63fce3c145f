"""benchmark_scores: a domain's own benchmark suites (data/eval/<domain>/) run with
lm-evaluation-harness on the latest student checkpoint and its base, through the training launcher
(pool "gpu"). A domain without hand-written suites is asked its SFT set's held-out questions as multiple
choice, a suite built under the artifact root per SFT version (nexa_core.evaluate.suite_builder). Per-item
scores are the asset; per suite and topic means with bootstrap intervals go to the benchmark_history table
(read by the leaderboard and the gate) and to the metadata."""

from pathlib import Path

import dagster as dg
import polars as pl

from nexa_assets.evaluate import GROUP
from nexa_assets.partitions import LAUNCHED
from nexa_assets.settings import settings_class, stage_settings
from nexa_assets.side_tables import append_summary, side_table_spec
from nexa_core import schemas
from nexa_core.evaluate.answer_cache import cache_folder
from nexa_core.evaluate.benchmark import (
    ALL_SUITES,
    OFFLINE,
    BenchmarkConfig,
    SuiteError,
    load_suites,
    scored_items,
    suite_request,
    summarize,
)
from nexa_core.evaluate.leaderboard import interval_text
from nexa_core.evaluate.suite_builder import build_heldout_suite, write_built_suite
from nexa_core.roles import ROLES
from nexa_core.tables import BENCHMARK_HISTORY, SFT_DATASET
from resources.delta import PROJECT_ROOT, DeltaStore, table_markdown
from resources.launcher import TrainingLauncher

benchmark_history = side_table_spec(BENCHMARK_HISTORY, GROUP)


SUITE_ROOT = str(PROJECT_ROOT / "data" / "eval")  # suites are in <suite_root>/<domain>/


# heldout_suite: a domain without suites in <suite_root>/<domain>/ is asked its held-out questions as a built suite
class BenchmarkSettings(
    settings_class(BenchmarkConfig, "BenchmarkFields", suite_root=(str, SUITE_ROOT), heldout_suite=(bool, True))
):
    def benchmark_config(self) -> BenchmarkConfig:
        return stage_settings(BenchmarkConfig, self)


def suite_metadata(summary: pl.DataFrame) -> tuple[dict, str]:
    """Per suite (and over all suites): each role's mean with its interval, n, chance and lift, as
    plottable numbers and as one markdown table."""
    from nexa_core.evaluate.metrics import ALL_TOPICS  # scipy: paid only when scoring

    overall = summary.filter(pl.col("topic") == ALL_TOPICS)
    scored = [r for r in ROLES if r in set(overall["model_role"])]
    metadata = {}
    lines = [f"| suite | metric | {' | '.join(scored)} | n | chance |", "|---" * (len(scored) + 4) + "|"]
    for (suite, metric), group in overall.group_by("suite", "metric", maintain_order=True):
        roles = {r["model_role"]: r for r in group.iter_rows(named=True)}
        for role, r in roles.items():
            metadata |= {
                f"{suite}/{role}/{metric}": r["mean"],
                f"{suite}/{role}/{metric}_ci_low": r["ci_low"],
                f"{suite}/{role}/{metric}_ci_high": r["ci_high"],
            }
        first = next(iter(roles.values()))
        metadata[f"{suite}/n"] = first["n"]
        if first["chance"] is not None:
            metadata[f"{suite}/chance"] = first["chance"]
        if "student" in roles and "base" in roles:
            metadata[f"{suite}/lift/{metric}"] = roles["student"]["mean"] - roles["base"]["mean"]
        cells = " | ".join(interval_text(roles[role]) if role in roles else "–" for role in scored)
        chance = "–" if first["chance"] is None else f"{first['chance']:.3f}"
        lines.append(f"| {suite} | {metric} | {cells} | {first['n']} | {chance} |")
    return metadata, "\n".join(lines)


def heldout_suite(
    delta: DeltaStore, launcher: TrainingLauncher, domain: str, checkpoint: dict
) -> tuple[Path | None, str]:
    """(the folder of the suite built from the held-out split of the SFT set the checkpoint was trained on, or None;
    what was done). One folder per SFT version and suite version under the artifact root, where the runner reads."""
    version = checkpoint["sft_version"]
    if version is None or not delta.exists(SFT_DATASET):
        return None, "no SFT set to build a held-out suite from"
    sft = delta.scan(SFT_DATASET, version).filter(pl.col("domain") == domain).collect()
    suite = build_heldout_suite(sft, domain, version)
    if suite is None:
        return None, f"{SFT_DATASET} v{version} has too few different held-out answers for a multiple-choice suite"
    folder = launcher.output_dir(domain, version, suite.version, stage="suite")
    try:
        write_built_suite(suite, folder)
    except ValueError as exc:
        return None, f"no held-out suite: {exc}"
    return Path(folder), f"built from {SFT_DATASET} v{version}'s test split: {len(suite.rows)} questions, {suite.name}"


@dg.asset(
    **LAUNCHED,
    group_name=GROUP,
    code_version="2",
    deps=[SFT_DATASET],  # a built suite asks the checkpoint's held-out questions
    kinds={"pytorch"},
)
def benchmark_scores(
    context: dg.AssetExecutionContext,
    config: BenchmarkSettings,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    student_checkpoint: pl.DataFrame,
):
    """The checkpoint and its base on the domain's benchmark suites (questions written by people; without
    them, the SFT set's held-out questions as multiple choice): multiple choice by log-likelihood, generative
    by exact match and token F1, per item; means with 95% bootstrap intervals per suite and topic in
    benchmark_history and the metadata."""
    domain = context.partition_key
    folder = Path(config.suite_root) / domain
    checkpoint = None if student_checkpoint.is_empty() else student_checkpoint.row(0, named=True)
    built = "hand-written"
    try:
        suites = load_suites(folder, domain)
        if not suites and config.heldout_suite and checkpoint:
            built_folder, built = heldout_suite(delta, launcher, domain, checkpoint)
            context.log.info(f"partition {domain}: no suites in {folder}; held-out suite: {built}")
            if built_folder:
                folder, suites = built_folder, load_suites(built_folder, domain)
    except SuiteError as exc:
        raise dg.Failure(str(exc)) from exc
    if not suites:
        note = f"partition {domain}: no benchmark suites ({folder} has no .jsonl or .yaml suite files); nothing run"
        context.log.info(note)
        yield dg.Output(
            schemas.empty(schemas.BENCHMARK_SCORES), metadata={"suites": 0, "note": note, "suite_dir": str(folder)}
        )
        return
    if checkpoint is None:
        raise dg.Failure(f"partition {domain}: student_checkpoint has no record; materialize it first")
    launcher.check_checkpoint(domain, checkpoint)
    settings = config.benchmark_config()
    ids = {"model_id": checkpoint["checkpoint_id"], "model_uri": checkpoint["artifact_uri"]}
    request = suite_request(
        domain,
        folder,
        suites,
        settings,
        **ids,
        files_sha256=checkpoint["files_sha256"],
        answer_cache=cache_folder(launcher.artifact_root),
    )
    run, _ = launcher.run_stage(context, request, {**(delta.storage_options or {}), **OFFLINE})
    scores, recorded = scored_items(
        request.output,
        run,
        settings,
        domain=domain,
        round=checkpoint["round"],
        checkpoint_id=checkpoint["checkpoint_id"],
    )
    summary = summarize(
        scores,
        by=["domain", "round", "checkpoint_id", "model_role"],
        confidence=settings.confidence,
        n_resamples=settings.n_resamples,
    )
    history = append_summary(delta, BENCHMARK_HISTORY, domain, summary)
    yield dg.Output(
        scores,
        metadata={
            **run_metadata(summary, run, recorded),
            "checkpoint_id": checkpoint["checkpoint_id"],
            "round": checkpoint["round"],
            "suites": len(suites),
            "suite_dir": str(folder),
            "suite_origin": built,
            "scores_file": request.output,
        },
    )
    context.log_event(history)


def run_metadata(summary: pl.DataFrame, run: dict, recorded: dict) -> dict:
    """Every suites metric per suite and topic beside the base's, and how the runner ran."""
    from nexa_core.evaluate.metrics import ALL_TOPICS  # scipy: paid only when scoring

    metadata, table = suite_metadata(summary)
    by_topic = (
        summary.filter((pl.col("suite") == ALL_SUITES) & (pl.col("topic") != ALL_TOPICS))
        .pivot("model_role", index=["topic", "metric"], values="mean")
        .sort("metric", "topic")
    )
    return {
        **metadata,
        "items": dg.MetadataValue.json(run["suites"]),
        "by_suite": dg.MetadataValue.md(table),
        "by_topic": dg.MetadataValue.md(table_markdown(by_topic, rows=100)),
        "chat_template": run["chat_template"],
        "device": run["device"],
        "lm_eval_version": run["lm_eval_version"],
        **{f"seconds/{role}": s for role, s in run["seconds"].items()},
        "cached_roles": ", ".join(run.get("cached_roles", [])) or "none",  # read back from the answer cache
        "benchmark_config": dg.MetadataValue.json(recorded),
    }
