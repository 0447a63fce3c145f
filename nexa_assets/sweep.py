"""Sweeps as Dagster runs. `sweep_job` (launch it from the UI's launchpad, `nexa sweep`, or the SDK) checks a grid of
ASSET.KEY settings and records the plan; `sweep_sensor` turns each point into a run of the training and evaluation
assets (`sweep_point_job`) with that point's settings, tagged with the sweep and the point, at most `max_parallel`
at a time (the run coordinator's limits and the gpu pool apply as to any run), a failed or killed point run again
up to `retries` times; when every point has an answer it requests `sweep_results`, which puts each point's
checkpoint beside its scores (Delta, one row per point) and writes the sweep's report beside the leaderboard."""

import json

import dagster as dg
import polars as pl
from pydantic import Field

from nexa_assets import benchmark, evaluate, pretrain, train
from nexa_assets.partitions import DELTA_PARTITION, domain_partitions
from nexa_assets.settings import node_settings
from nexa_core.evaluate.leaderboard import interval_text
from nexa_core.sweep import (
    POINT_TAG,
    SWEEP_TAG,
    SweepError,
    best_points,
    check_grid,
    grid_points,
    point_assets,
    sweep_id,
    sweep_rows,
    write_sweep_report,
)
from nexa_core.tables import BENCHMARK_HISTORY, CHECKPOINT_HISTORY, EVAL_HISTORY, SWEEP_RESULTS
from nexa_forge.settings import SettingError, add_setting, grid_values, setting_value
from resources.delta import DeltaStore, table_markdown
from resources.reports import ReportFolder

GROUP = "sweeps"
ATTEMPT_TAG = "nexa/sweep_attempt"
# a replay (nexa_assets/replay.py) runs as a sweep of one point; its plan's run carries the point's settings
REPLAY_JOB, REPLAY_TAG, REPLAY_SETTINGS_TAG = "replay_job", "nexa/replay", "nexa/replay_settings"
DONE = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


class SweepSettings(dg.Config):
    domain: str = Field(description="the domain (partition) the sweep trains; its SFT set must exist")
    grid: list[str] = Field(description="ASSET.KEY=V1,V2,..., e.g. student_checkpoint.learning_rate=1e-4,2e-4")
    random: int = Field(default=0, description="0: every combination of the grid; N: N of them, drawn with seed")
    seed: int = Field(default=17, description="of the random draw")
    max_parallel: int = Field(default=2, description="this sweep's point runs queued at once")
    retries: int = Field(default=1, description="a failed or killed point is run again up to this many times")
    settings: list[str] = Field(default=[], description="ASSET.KEY=VALUE on every point, e.g. a smoke size")

    def plan(self) -> tuple[str, list[dict], dict]:
        """(sweep id, points, the settings every point shares); the same settings make the same sweep."""
        grid = check_grid(grid_values(self.grid))
        shared = {target: setting_value(value) for target, _, value in (s.partition("=") for s in self.settings)}
        return (
            sweep_id(self.domain, grid | {"*": shared}, self.random, self.seed),
            grid_points(grid, self.random, self.seed),
            shared,
        )


POINT_ASSETS = [
    pretrain.student_base,
    train.student_checkpoint,
    evaluate.eval_predictions,
    evaluate.eval_metrics,
    benchmark.benchmark_scores,
]
POINT_SETTINGS = node_settings(a.op for a in POINT_ASSETS)

sweep_point_job = dg.define_asset_job(
    "sweep_point_job",
    selection=POINT_ASSETS,
    description="One point of a sweep: the training and evaluation assets with the point's settings (launched by "
    "sweep_sensor; each run tagged nexa/sweep and nexa/sweep_point).",
)


def point_run_config(settings: dict) -> dict:
    """{ASSET.KEY: value} as the point job's run config; a key no asset of it has is an error naming the closest."""
    ops: dict = {}
    for target, value in settings.items():
        add_setting(ops, POINT_SETTINGS, sweep_point_job.name, target, value)
    return {"ops": ops}


@dg.op(description="Checks a sweep's grid against the settings of the point job's assets and records its points.")
def sweep_plan(context: dg.OpExecutionContext, config: SweepSettings) -> None:
    try:
        sweep, points, shared = config.plan()
        for point in points:
            point_run_config(shared | point)
    except (SweepError, SettingError) as exc:
        raise dg.Failure(f"sweep of {config.domain}: {exc}") from None
    if config.domain not in context.instance.get_dynamic_partitions(domain_partitions.name):
        raise dg.Failure(f"sweep: no domain {config.domain!r}; add it (nexa-domains add) and build its SFT set first")
    context.instance.add_run_tags(context.run_id, {SWEEP_TAG: sweep})
    table = pl.DataFrame([{"point": i, "settings": json.dumps(p, sort_keys=True)} for i, p in enumerate(points)])
    context.log.info(
        f"sweep {sweep} of {config.domain}: {len(points)} points\n{table_markdown(table, rows=len(points))}"
    )


@dg.job(
    description="A sweep: a grid of settings, each point a run of the training and evaluation assets (sweep_sensor "
    "launches them and, when all are done, sweep_results). Launch it again with the same config to resume: "
    "points that succeeded are not run again.",
    tags={"nexa/kind": "sweep"},
)
def sweep_job():
    sweep_plan()


sweep_results_job = dg.define_asset_job(
    "sweep_results_job",
    selection=dg.AssetSelection.assets(SWEEP_RESULTS),
    description="A sweep's table and report, from its points' checkpoints and scores.",
)


def point_runs(instance: dg.DagsterInstance, sweep: str) -> dict[int, list[dg.DagsterRun]]:
    """The sweep's point runs, per point, oldest first."""
    runs = instance.get_runs(dg.RunsFilter(job_name=sweep_point_job.name, tags={SWEEP_TAG: sweep}))
    out: dict[int, list[dg.DagsterRun]] = {}
    for run in sorted(runs, key=lambda r: int(r.tags.get(ATTEMPT_TAG, 0))):
        out.setdefault(int(run.tags[POINT_TAG]), []).append(run)
    return out


def succeeded(runs: dict[int, list[dg.DagsterRun]]) -> dict[int, str]:
    """Per point, its newest successful run id."""
    ok = {p: [r for r in rs if r.status == dg.DagsterRunStatus.SUCCESS] for p, rs in runs.items()}
    return {p: rs[-1].run_id for p, rs in ok.items() if rs}


def sweep_requests(config: SweepSettings, runs: dict[int, list[dg.DagsterRun]]) -> list:
    """What a sweep needs next: a run for each point with no success, none running and retries left (at most
    max_parallel at once), then, once every point succeeded or ran out of retries, its results."""
    sweep, points, shared = config.plan()
    active = sum(1 for rs in runs.values() for r in rs if r.status not in DONE)
    done = succeeded(runs)
    requests, waiting = [], False
    for index, point in enumerate(points):
        tried = runs.get(index, [])
        if index in done:
            continue
        if any(r.status not in DONE for r in tried):
            waiting = True
            continue
        if len(tried) > config.retries:
            continue  # out of retries: its row says it has no successful run
        waiting = True
        if active >= config.max_parallel:
            continue
        active += 1
        requests.append(
            dg.RunRequest(
                job_name=sweep_point_job.name,
                asset_selection=[dg.AssetKey(a) for a in point_assets(shared | point)],
                partition_key=config.domain,
                run_config=point_run_config(shared | point),
                tags={SWEEP_TAG: sweep, POINT_TAG: str(index), ATTEMPT_TAG: str(len(tried))},
                run_key=f"{sweep}:{index}:{len(tried)}",
            )
        )
    if not waiting:
        answered = ",".join(f"{p}={r}" for p, r in sorted(done.items()))
        requests.append(
            dg.RunRequest(
                job_name=sweep_results_job.name,
                partition_key=config.domain,
                run_config={"ops": {SWEEP_RESULTS: {"config": config.model_dump()}}},
                tags={SWEEP_TAG: sweep},
                run_key=f"{sweep}:results:{sweep_id(answered, {}, 0, 0)}",
            )
        )
    return requests


@dg.sensor(
    jobs=[sweep_point_job, sweep_results_job],
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the points of each planned sweep (sweep_job), at most max_parallel at a time, a failed point "
    "again up to its retries, then the sweep's results. It acts only on sweeps someone launched.",
)
def sweep_sensor(context: dg.SensorEvaluationContext):
    seen, requests = set(), []
    for sweep, config in planned(context.instance):  # newest first: a relaunched plan (more retries, say) wins
        if sweep not in seen:
            seen.add(sweep)
            requests += sweep_requests(config, point_runs(context.instance, sweep))
    return dg.SensorResult(run_requests=requests)


def one_point(domain: str, settings: dict) -> SweepSettings:
    """A sweep of one point (a replay): every setting shared, nothing swept, no retry."""
    shared = [f"{key}={json.dumps(value)}" for key, value in sorted(settings.items())]
    return SweepSettings(domain=domain, grid=[], settings=shared, max_parallel=1, retries=0)


def planned(instance: dg.DagsterInstance, limit: int = 20) -> list[tuple[str, SweepSettings]]:
    """(sweep id, its settings) of the newest successful plans, newest first: sweeps, then replays."""
    done = [dg.DagsterRunStatus.SUCCESS]
    sweeps = instance.get_runs(dg.RunsFilter(job_name=sweep_job.name, statuses=done), limit=limit)
    replays = instance.get_runs(dg.RunsFilter(job_name=REPLAY_JOB, statuses=done), limit=limit)
    return [(r.tags[SWEEP_TAG], SweepSettings(**r.run_config["ops"]["sweep_plan"]["config"])) for r in sweeps] + [
        (
            r.tags[SWEEP_TAG],
            one_point(r.run_config["ops"]["replay_plan"]["config"]["domain"], json.loads(r.tags[REPLAY_SETTINGS_TAG])),
        )
        for r in replays
    ]


@dg.asset(
    name=SWEEP_RESULTS,
    partitions_def=domain_partitions,
    metadata=DELTA_PARTITION,
    group_name=GROUP,
    deps=[CHECKPOINT_HISTORY, EVAL_HISTORY, BENCHMARK_HISTORY],
    kinds={"delta"},
)
def sweep_results(
    context: dg.AssetExecutionContext, config: SweepSettings, delta: DeltaStore, reports: ReportFolder
) -> dg.Output[pl.DataFrame]:
    """Every sweep of the domain, one row per point: its settings, its run and checkpoint, train time and tokens/s,
    and the student's test and suite scores beside the base's, with 95% intervals. The sweep's report (HTML beside
    the leaderboard) plots each score against each swept setting and names the best point."""
    domain = context.partition_key
    if config.domain != domain:
        raise dg.Failure(f"sweep_results: the sweep is of {config.domain}, the partition is {domain}")
    sweep, points, shared = config.plan()
    runs = succeeded(point_runs(context.instance, sweep))
    if not delta.exists(CHECKPOINT_HISTORY):
        raise dg.Failure(f"partition {domain}: checkpoint_history has no rows; no point of sweep {sweep} trained")
    histories = [
        delta.read_partition(t, domain) if delta.exists(t) else None
        for t in (CHECKPOINT_HISTORY, EVAL_HISTORY, BENCHMARK_HISTORY)
    ]
    rows = sweep_rows(domain, sweep, points, runs, *histories, shared=shared)
    report = write_sweep_report(rows, reports.path(f"sweep-{domain}-{sweep}.html"))
    earlier = delta.read_partition(SWEEP_RESULTS, domain) if delta.exists(SWEEP_RESULTS) else rows.clear()
    best = best_points(rows)
    return dg.Output(
        pl.concat([earlier.filter(pl.col("sweep_id") != sweep), rows]),
        metadata={
            "sweep_id": sweep,
            "points": len(points),
            "points_trained": len(runs),
            "report": dg.MetadataValue.path(str(report)),
            "best": dg.MetadataValue.md(
                "\n".join(
                    f"- {b['measure']}: point {b['best_point']} {interval_text(b['best'])}; {b['apart']}" for b in best
                )
            ),
            "rows": dg.MetadataValue.json(
                [
                    {k: row[k] for k in ("point", "settings", "checkpoint_id", "train_seconds", "tokens_per_second")}
                    | {"scores": row["scores"]}
                    for row in rows.iter_rows(named=True)
                ]
            ),
        },
    )
