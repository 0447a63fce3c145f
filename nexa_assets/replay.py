"""Replaying a release (`nexa replay DOMAIN --version N`, or `replay_job` from the UI's launchpad): the plan checks
every recorded input (nexa_core/release/replay.py) and records the one run that rebuilds the release (its settings,
its pinned SFT and documents versions); sweep_sensor launches it as a one-point sweep, tagged with the replay, and
sweep_results scores it beside the base. The plan's metadata holds the recorded scores to set the replay against."""

import json

import dagster as dg
from pydantic import Field

from nexa_assets.sweep import REPLAY_JOB, REPLAY_SETTINGS_TAG, REPLAY_TAG, SWEEP_TAG, one_point, point_run_config
from nexa_core.release.gate import ReleaseError
from nexa_core.release.provenance import code_version
from nexa_core.release.replay import plan_replay
from resources.delta import PROJECT_ROOT, DeltaStore
from resources.launcher import TrainingLauncher
from resources.tracking import MlflowTracking


class ReplaySettings(dg.Config):
    domain: str = Field(description="the domain whose release to replay")
    version: int = Field(description="the release's registry version (nexa-<domain> vN)")


@dg.op(
    out=dg.Out(dg.Nothing),
    description="Checks that every input a release recorded can still be had, and records the run that rebuilds it.",
)
def replay_plan(
    context: dg.OpExecutionContext,
    config: ReplaySettings,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    tracking: MlflowTracking,
):
    try:
        plan = plan_replay(
            delta.tables(),
            config.domain,
            config.version,
            tracking.registered_model(config.domain),
            code_version(PROJECT_ROOT),
            launcher.bases_dir() if launcher.backend().runs_here else None,
        )
    except ReleaseError as exc:
        raise dg.Failure(str(exc)) from None
    point_run_config(plan.settings)  # every recorded setting is one the assets still have
    sweep_id = one_point(config.domain, plan.settings).plan()[0]
    tags = {
        SWEEP_TAG: sweep_id,
        REPLAY_TAG: plan.label,
        REPLAY_SETTINGS_TAG: json.dumps(plan.settings),
        "nexa/replay_recorded": json.dumps(plan.recorded),  # what the replay is set against, for the SDK
        "nexa/replay_code": plan.code_note(),
    }
    context.instance.add_run_tags(context.run_id, tags)
    context.log.info(f"replay {plan.label}: sweep {sweep_id}; {plan.code_note()}")
    yield dg.Output(
        None,
        metadata={
            "replay": plan.label,
            "sweep_id": sweep_id,
            "settings": dg.MetadataValue.json(plan.settings),
            "recorded": dg.MetadataValue.json(plan.recorded),
            "code_version": plan.code_note(),
        },
    )


@dg.job(
    name=REPLAY_JOB,
    description="Rebuild a release from its record: the SFT rows and documents at their recorded versions, the typed "
    "settings and the base; trained and evaluated anew (sweep_sensor runs it), scored beside the recorded scores.",
    tags={"nexa/kind": "replay"},
)
def replay_job():
    replay_plan()
