"""distilled_scores: the distilled student scored like any checkpoint, beside its teacher, the same pruned copy
trained by SFT alone and the off-the-shelf base: answers to the test split and the domain's suites, launched
where training runs (pool "gpu"), with each model's size and generation speed."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from nexa_assets.benchmark import SUITE_ROOT
from nexa_assets.evaluate import GROUP
from nexa_assets.partitions import LAUNCHED
from nexa_assets.settings import settings_class, stage_settings
from nexa_core.evaluate.benchmark import OFFLINE, SuiteError, load_suites, suite_request
from nexa_core.evaluate.distilled import SCORED_ROLES, distilled_summary, distilled_verdicts, generation_speed
from nexa_core.evaluate.leaderboard import distilled_markdown
from nexa_core.ids import content_id
from nexa_core.recipe import BenchmarkConfig, GenerateConfig
from nexa_core.stage import GenerateRequest
from nexa_core.tables import SFT_DATASET
from nexa_core.train.checkpoints import eval_dir
from resources.delta import DeltaStore
from resources.launcher import TrainingLauncher

GenerationSettings = settings_class(GenerateConfig, "GenerationSettings")  # generate_default.yaml's
SuiteSettings = settings_class(BenchmarkConfig, "SuiteSettings", roles=None)  # benchmark_default.yaml's (roles: below)


class DistilledScoreSettings(dg.Config):
    generation: GenerationSettings = GenerationSettings()
    benchmark: SuiteSettings = SuiteSettings()
    suite_root: str = SUITE_ROOT  # suites are in <suite_root>/<domain>/
    roles: list[str] = list(SCORED_ROLES)
    speed_tokens: int = 32  # each model's speed: new tokens/s decoding exactly this many for one batch
    confidence: float = 0.95


def scoring_requests(domain: str, distilled: dict, config: DistilledScoreSettings, sft_uri: str, suites: list):
    """The answers' request, and the suites' request when the domain has suites."""
    out_dir = eval_dir(distilled["model_uri"])
    generation = stage_settings(GenerateConfig, config.generation, speed_tokens=config.speed_tokens)
    common = {"domain": domain, "expect_sha256": distilled["files_sha256"]}
    answers = GenerateRequest(
        **common,
        adapter=distilled["model_uri"],
        sft_uri=sft_uri,
        sft_version=distilled["sft_version"],
        output=f"{out_dir}/predictions-{content_id(distilled['distilled_id'], generation.to_dict(), config.roles)}"
        ".parquet",
        roles=list(config.roles),
        overrides=generation.changes(),
    )
    if not suites:
        return answers, None
    settings = stage_settings(BenchmarkConfig, config.benchmark, roles=list(config.roles))
    suite_dir = Path(config.suite_root) / domain
    ids = {"model_id": distilled["distilled_id"], "model_uri": distilled["model_uri"]}
    return answers, suite_request(domain, suite_dir, suites, settings, **ids, files_sha256=distilled["files_sha256"])


@dg.asset(**LAUNCHED, group_name=GROUP, code_version="1", kinds={"pytorch", "delta"})
def distilled_scores(
    context: dg.AssetExecutionContext,
    config: DistilledScoreSettings,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    student_distilled: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """The distilled student, its teacher, the same pruned copy trained by SFT alone and the base on the test
    split (token F1, contains) and the suites (accuracy, acc_norm), with 95% intervals, sizes and tokens/s."""
    domain = context.partition_key
    if student_distilled.is_empty():
        raise dg.Failure(f"partition {domain}: student_distilled has no record; materialize it first")
    distilled = student_distilled.row(0, named=True)
    try:
        suites = load_suites(Path(config.suite_root) / domain, domain)
    except SuiteError as exc:
        raise dg.Failure(str(exc)) from exc
    answers, suite_run = scoring_requests(domain, distilled, config, delta.uri(SFT_DATASET), suites)
    storage = dict(delta.storage_options or {})
    generated, _ = launcher.run_stage(context, answers, storage)
    items = None
    if suite_run:
        launcher.run_stage(context, suite_run, {**storage, **OFFLINE})
        items = pl.read_parquet(suite_run.output)
    size = {"student": distilled["parameters"], "pruned_sft": distilled["parameters"]}
    size |= {"teacher": distilled["teacher_parameters"], "base": distilled["teacher_parameters"]}
    predictions = pl.read_parquet(answers.output)
    speed = generated.get("speed") or generation_speed(predictions, generated["seconds"])
    summary = distilled_summary(predictions, items, speed, size, config.confidence)
    summary = summary.with_columns(
        domain=pl.lit(domain),
        distilled_id=pl.lit(distilled["distilled_id"]),
        teacher_id=pl.lit(distilled["teacher_id"]),
    )
    return dg.Output(
        summary,
        metadata={
            "scores": dg.MetadataValue.md(distilled_markdown(summary)),
            **distilled_verdicts(summary),
            "distilled_id": distilled["distilled_id"],
            "teacher_id": distilled["teacher_id"],
            "device": generated["device"],
            "precision": generated["precision"],
            "generation_config": dg.MetadataValue.json(generated["generation_config"]),
            "predictions_file": answers.output,
            **({"scores_file": suite_run.output} if suite_run else {"suites": 0}),
            "rows": dg.MetadataValue.json(json.loads(summary.write_json())),
        },
    )
