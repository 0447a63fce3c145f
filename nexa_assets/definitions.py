"""The code location: assets, checks, the distillation job, the raw folder sensor, resources."""


import json
import os

import dagster as dg

from nexa_assets import checks, distill, train
from nexa_assets.sensors import build_raw_folder_sensor
from resources.delta import DeltaStore, NexaDeltaIOManager, storage_from_env
from resources.launcher import TrainingLauncher
from resources.teacher import TeacherResource
from resources.tracking import MlflowTracking

distill_job = dg.define_asset_job(
    "distill_job", selection=dg.AssetSelection.groups(distill.GROUP),
    description="Raw text to SFT sets for one domain partition.")


nexa_job = dg.define_asset_job(
    "nexa_job", selection=dg.AssetSelection.groups(distill.GROUP, train.GROUP),
    description="The whole graph for one domain: raw text to SFT sets to a trained student checkpoint.")


def teacher_from_env() -> TeacherResource:
    """Offline heuristic teacher unless NEXA_TEACHER_BASE_URL or NEXA_TEACHER_BACKEND=openai is set.
    NEXA_TEACHER_MODE picks sync or batch; NEXA_TEACHER_OPTIONS is a JSON object of any other
    TeacherResource field, e.g. {"max_concurrency": 64, "budget_usd": 20}."""
    base_url = os.environ.get("NEXA_TEACHER_BASE_URL")
    backend = os.environ.get("NEXA_TEACHER_BACKEND", "openai" if base_url else "heuristic")
    if backend == "heuristic":
        return TeacherResource()
    options = json.loads(os.environ.get("NEXA_TEACHER_OPTIONS") or "{}")
    if "api_key" in options:  # a literal key would show in the UI's resource config
        raise ValueError("NEXA_TEACHER_OPTIONS must not hold api_key; name its variable in NEXA_TEACHER_API_KEY_ENV")
    return TeacherResource(backend="openai", base_url=base_url,
                           model=os.environ.get("NEXA_TEACHER_MODEL", "gpt-4o-mini"),
                           mode=os.environ.get("NEXA_TEACHER_MODE", "sync"),
                           api_key=dg.EnvVar(os.environ.get("NEXA_TEACHER_API_KEY_ENV", "OPENAI_API_KEY")), **options)


def build_defs() -> dg.Definitions:
    root, storage, options = storage_from_env()
    return dg.Definitions(
        assets=[*distill.DISTILL_ASSETS, train.student_checkpoint],
        asset_checks=checks.quality_checks,
        jobs=[distill_job, nexa_job],
        sensors=[build_raw_folder_sensor(distill_job)],
        resources={
            "io_manager": NexaDeltaIOManager(root_uri=root, storage_options=storage, schema="nexa"),
            "delta": DeltaStore(root_uri=root, storage_options=options),
            "teacher": teacher_from_env(),
            "launcher": TrainingLauncher(),
            "tracking": MlflowTracking(),
        },
        # One process per run: the multiprocess executor re-imports the code location for every step.
        executor=dg.in_process_executor,
    )


defs = build_defs()
