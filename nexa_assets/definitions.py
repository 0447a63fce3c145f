"""The code location: assets, checks, jobs (distill, the whole graph, one feedback round), the raw folder
and feedback loop sensors, resources."""

import dagster as dg

from nexa_assets import (
    benchmark,
    checks,
    distill,
    distilled_release,
    evaluate,
    kd,
    pretrain,
    release,
    replay,
    sweep,
    train,
)
from nexa_assets.sensors import build_feedback_loop_sensor, build_raw_folder_sensor
from nexa_ui.links import page_url
from resources.delta import DeltaStore, NexaDeltaIOManager
from resources.environment import Environment
from resources.launcher import TrainingLauncher
from resources.reports import RawFolder, ReportFolder
from resources.student import StudentModel
from resources.tracking import MlflowTracking

distill_job = dg.define_asset_job(
    "distill_job",
    selection=dg.AssetSelection.groups(distill.GROUP),
    description="Raw text to SFT sets for one domain partition.",
)


KD = dg.AssetSelection.assets(*kd.KD_ASSETS)  # its own decision: a smaller model to serve (kd_job)

nexa_job = dg.define_asset_job(
    "nexa_job",
    selection=dg.AssetSelection.groups(distill.GROUP, train.GROUP, evaluate.GROUP) - KD,
    description="The whole graph for one domain: raw text to SFT sets, a trained student, its evaluation, "
    "the leaderboard and the feedback set for the next round.",
)


round_job = dg.define_asset_job(  # a release is its own decision, not the end of every round
    "round_job",
    selection=(
        dg.AssetSelection.assets("teacher_inputs").downstream()
        - dg.AssetSelection.assets(release.model_release).downstream()
        - KD
        - dg.AssetSelection.assets(distilled_release.distilled_release)
    ).materializable(),  # not the side tables: their writers record them
    description="One round of the feedback loop for a domain: teacher inputs (mixing in the latest feedback set) "
    "-> teacher -> filters -> SFT -> train -> eval -> feedback set, and the leaderboard.",
)


kd_job = dg.define_asset_job(
    "kd_job",
    selection=KD,
    description="A smaller student for one domain: the checkpoint's top-k token distributions cached "
    "(teacher_logits), a depth-pruned copy of it trained on them (student_distilled), and that copy scored "
    "beside the checkpoint, the same copy trained by SFT alone and the base (distilled_scores).",
)


def with_ui_links(ui_url: str | None, assets: list) -> list:
    """Where nexa-ui answers (NEXA_UI_URL), each asset's description ends with a link to its page there."""

    def linked(spec: dg.AssetSpec) -> dg.AssetSpec:
        url = page_url(ui_url, spec.key.to_user_string())
        if url is None:  # no page shows this asset's table
            return spec
        described = spec.replace_attributes(description=f"{spec.description or ''}\n\n[See its rows in nexa-ui]({url})")
        return described.merge_attributes(metadata={"nexa_ui": dg.MetadataValue.url(url)})

    return list(dg.map_asset_specs(linked, assets)) if ui_url else assets


def build_defs(env: Environment) -> dg.Definitions:
    return dg.Definitions(
        assets=with_ui_links(
            env.ui_url,
            [
                *distill.DISTILL_ASSETS,
                pretrain.student_base,
                train.student_checkpoint,
                train.checkpoint_history,
                *kd.KD_ASSETS,
                *evaluate.EVAL_ASSETS,
                benchmark.benchmark_scores,
                benchmark.benchmark_history,
                release.model_release,
                distilled_release.distilled_release,
                release.release_history,
                release.deployment,
                sweep.sweep_results,
            ],
        ),
        asset_checks=checks.quality_checks,
        jobs=[
            distill_job,
            nexa_job,
            round_job,
            release.release_job,
            kd_job,
            distilled_release.distilled_release_job,
            sweep.sweep_job,
            sweep.sweep_point_job,
            sweep.sweep_results_job,
            replay.replay_job,
        ],
        sensors=[
            build_raw_folder_sensor(distill_job, env.raw_root),
            build_feedback_loop_sensor(round_job, env.max_rounds, env.min_improvement),
            sweep.sweep_sensor,
        ],
        resources={
            "io_manager": NexaDeltaIOManager(root_uri=env.delta_root, storage_options=env.delta_storage, schema="nexa"),
            "delta": DeltaStore(root_uri=env.delta_root, storage_options=env.storage_options),
            "teacher": env.teacher,
            "judge": env.judge,
            "launcher": TrainingLauncher(**{**env.launcher, "artifact_root": env.artifact_root}),
            "student": StudentModel(base_model=env.base_model),
            "tracking": MlflowTracking(tracking_uri=env.tracking_uri),
            "reports": ReportFolder(folder=env.report_dir),
            "raw": RawFolder(folder=str(env.raw_root)),
        },
        # One process per run: the multiprocess executor re-imports the code location for every step.
        executor=dg.in_process_executor,
    )


ENVIRONMENT = Environment.read()  # once per process: the code location and the commands share it
defs = build_defs(ENVIRONMENT)
