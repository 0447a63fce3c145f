"""The code location: assets, checks, jobs (distill, the whole graph, one feedback round), the raw folder
and feedback loop sensors, resources."""


import json
import os

import dagster as dg

from nexa_assets import benchmark, checks, distill, evaluate, pretrain, train
from nexa_assets.sensors import build_feedback_loop_sensor, build_raw_folder_sensor
from resources.delta import DeltaStore, NexaDeltaIOManager, storage_from_env
from resources.launcher import TrainingLauncher
from resources.teacher import TeacherResource
from resources.tracking import MlflowTracking

distill_job = dg.define_asset_job(
    "distill_job", selection=dg.AssetSelection.groups(distill.GROUP),
    description="Raw text to SFT sets for one domain partition.")


nexa_job = dg.define_asset_job(
    "nexa_job", selection=dg.AssetSelection.groups(distill.GROUP, train.GROUP, evaluate.GROUP),
    description="The whole graph for one domain: raw text to SFT sets, a trained student, its evaluation, "
                "the leaderboard and the feedback set for the next round.")


round_job = dg.define_asset_job(
    "round_job", selection=dg.AssetSelection.assets("teacher_inputs").downstream(),
    description="One round of the feedback loop for a domain: teacher inputs (mixing in the latest feedback set) "
                "-> teacher -> filters -> SFT -> train -> eval -> feedback set, and the leaderboard.")


def openai_from_env(prefix: str, offline: TeacherResource) -> TeacherResource:
    """The resource configured by {prefix}_BASE_URL (or {prefix}_BACKEND=openai), {prefix}_MODEL,
    {prefix}_MODE (sync or batch), {prefix}_API_KEY_ENV (the key's variable, OPENAI_API_KEY by default)
    and {prefix}_OPTIONS (JSON of any other TeacherResource field, e.g. {"max_concurrency": 64,
    "budget_usd": 20}); `offline` when none is set."""
    base_url = os.environ.get(f"{prefix}_BASE_URL")
    if os.environ.get(f"{prefix}_BACKEND", "openai" if base_url else "") != "openai":
        return offline
    options = json.loads(os.environ.get(f"{prefix}_OPTIONS") or "{}")
    if "api_key" in options:  # a literal key would show in the UI's resource config
        raise ValueError(f"{prefix}_OPTIONS must not hold api_key; name its variable in {prefix}_API_KEY_ENV")
    return TeacherResource(backend="openai", base_url=base_url, model=os.environ.get(f"{prefix}_MODEL", "gpt-4o-mini"),
                           mode=os.environ.get(f"{prefix}_MODE", "sync"),
                           api_key=dg.EnvVar(os.environ.get(f"{prefix}_API_KEY_ENV", "OPENAI_API_KEY")), **options)


def teacher_from_env() -> TeacherResource:
    """The offline heuristic teacher unless NEXA_TEACHER_* names an endpoint."""
    return openai_from_env("NEXA_TEACHER", TeacherResource())


def judge_from_env() -> TeacherResource:
    """No judge (heuristic scores only) unless NEXA_JUDGE_* names an endpoint."""
    return openai_from_env("NEXA_JUDGE", TeacherResource(backend="none", model="none"))


def env_settings(**variables: str) -> dict:
    """Resource fields taken from environment variables that are set (the rest keep their defaults)."""
    return {field: os.environ[name] for field, name in variables.items() if os.environ.get(name)}


def build_defs() -> dg.Definitions:
    root, storage, options = storage_from_env()
    return dg.Definitions(
        assets=[*distill.DISTILL_ASSETS, pretrain.student_base, train.student_checkpoint, *evaluate.EVAL_ASSETS, benchmark.benchmark_scores],
        asset_checks=checks.quality_checks,
        jobs=[distill_job, nexa_job, round_job],
        sensors=[build_raw_folder_sensor(distill_job), build_feedback_loop_sensor(round_job)],
        resources={
            "io_manager": NexaDeltaIOManager(root_uri=root, storage_options=storage, schema="nexa"),
            "delta": DeltaStore(root_uri=root, storage_options=options),
            "teacher": teacher_from_env(),
            "judge": judge_from_env(),
            "launcher": TrainingLauncher(**env_settings(artifact_root="NEXA_ARTIFACT_ROOT")),
            "tracking": MlflowTracking(**env_settings(tracking_uri="MLFLOW_TRACKING_URI")),
        },
        # One process per run: the multiprocess executor re-imports the code location for every step.
        executor=dg.in_process_executor,
    )


defs = build_defs()
