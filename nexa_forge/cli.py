"""`nexa`: NexaCompute from the shell, through a Dagster webserver (NexaForgeClient).

  nexa domains list | add NAME [NAME ...]
  nexa run DOMAIN [--job JOB | --assets A,B]      the whole graph (nexa_job), another job or a selection
  nexa generate|distill|train|evaluate|deploy DOMAIN
  nexa round DOMAIN                               one feedback round
  nexa backfill DOMAIN [DOMAIN ...] [--job JOB]   one run per domain, launched by the daemon
  nexa wait ID [--backfill]                       progress until the run (or backfill) finishes
  nexa leaderboard | checkpoints | releases | logs RUN_ID
  nexa distilled promote DOMAIN                   release the distilled student (kd_job made it) as <model>-distilled
  nexa distilled list                             each domain's latest distilled release
  nexa sweep DOMAIN --grid ASSET.KEY=V1,V2 [--grid ...] [--random N] [--max-parallel K] [--set ASSET.KEY=V]
                                                  each point a run of the training and evaluation assets
  nexa replay DOMAIN --version N                  release N rebuilt from its record, scored beside it

Serving runs on the code location's machine, not through the webserver: `nexa-serve DOMAIN` serves the
domain's champion, `nexa-serve DOMAIN --distilled` its distilled release.

Launching prints the run (or backfill) id; --wait then follows it with a line each time it moves on.
Exit status: 0 done, 1 a run failed, 2 the request was refused (the message says why).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nexa_forge.client import DEFAULT_URL, VERBS, Materialization, NexaForgeClient, NexaForgeError, openai_teacher
from nexa_forge.settings import setting_value

CHECKPOINT_KEYS = ("round", "steps", "final_loss", "device", "artifact_uri")


def settings(items: list[str]) -> dict:
    """--set ASSET.KEY=VALUE, the value read as YAML (1 is a number, true a boolean)."""
    out = {}
    for item in items:
        target, sep, value = item.partition("=")
        if not sep:
            raise NexaForgeError(f"--set {item}: expected ASSET.KEY=VALUE, e.g. student_checkpoint.num_train_epochs=1")
        out[target] = setting_value(value)
    return out


def launch_options(args) -> dict:
    teacher = None
    if args.teacher_url:
        if not args.teacher_model:
            raise NexaForgeError("--teacher-url needs --teacher-model, the model the endpoint serves")
        teacher = openai_teacher(args.teacher_url, args.teacher_model, args.teacher_key_env)
    return {
        "settings": settings(args.set),
        "epochs": args.epochs,
        "student_base": args.student_base,
        "teacher": teacher,
    }


def watch(forge: NexaForgeClient, ident: str, backfill: bool, timeout: float | None) -> int:
    """A line each time the run (or backfill) moves on, until it finishes; 0 if it succeeded."""
    wait = forge.wait_backfill if backfill else forge.wait
    return 0 if wait(ident, timeout=timeout, progress=lambda line: print(line, flush=True)).ok else 1


def launched(forge: NexaForgeClient, args, ident: str, backfill: bool = False) -> int:
    print(ident, flush=True)  # alone on its line, for scripts: RUN=$(nexa distill physics)
    return watch(forge, ident, backfill, args.timeout) if args.wait else 0


def show(rows: list[Materialization], keys: tuple[str, ...] | None, none: str) -> None:
    """A line per domain: when, which run, and the metadata `keys` (default: every one-line value)."""
    if not rows:
        print(none)
    for row in rows:
        shown = keys or [k for k, v in row.metadata.items() if isinstance(v, (int, float, str)) and "\n" not in str(v)]
        print(
            f"{row.domain or '-':12s} {row.timestamp:%Y-%m-%d %H:%M:%S} run {row.run_id}  "
            + "  ".join(f"{k}={row.metadata[k]}" for k in shown if k in row.metadata)
        )


def table(rows: list[dict[str, str]]) -> str:
    widths = {key: max(len(key), *(len(row.get(key, "")) for row in rows)) for key in rows[0]}
    lines = ["  ".join(key.ljust(width) for key, width in widths.items())]
    lines += ["  ".join(row.get(key, "").ljust(width) for key, width in widths.items()) for row in rows]
    return "\n".join(lines)


def scored(score: dict | None, prefix: str = "") -> str:
    if not score or score.get(f"{prefix}mean") is None:
        return "-"
    return f"{score[prefix + 'mean']:.3f} [{score[prefix + 'ci_low']:.3f}, {score[prefix + 'ci_high']:.3f}]"


def sweep_text(results: dict) -> str:
    """Each point's settings, checkpoint and measures (the student's, then the base's), and the best points."""
    lines = []
    for row in results["rows"]:
        lines.append(f"point {row['point']} {row['settings']}: checkpoint {row['checkpoint_id'] or 'none'}")
        lines += [f"  {s['measure']:24s} {scored(s):26s} base {scored(s, 'base_')}" for s in row["scores"]]
    return "\n".join(lines + ["best:", results["best"]])


def replay_text(tags: dict, row: dict) -> str:
    """The replayed student's measures beside the release's recorded ones, and the code version compared."""
    recorded = {r["measure"]: r["student"] for r in json.loads(tags.get("nexa/replay_recorded", "[]"))}
    lines = [f"{tags.get('nexa/replay')}: {tags.get('nexa/replay_code')}", f"{'measure':24s} {'recorded':26s} replayed"]
    for score in row["scores"]:
        then = recorded.get(score["measure"])
        inside = then and then["ci_low"] <= score["mean"] <= then["ci_high"]
        lines.append(
            f"{score['measure']:24s} {scored(then):26s} {scored(score)}"
            + ("  (within the recorded interval)" if inside else "  (outside the recorded interval)")
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="nexa", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    url_help = f"the Dagster webserver (default: NEXA_DAGSTER_URL, else {DEFAULT_URL})"
    top.add_argument("--url", default=os.environ.get("NEXA_DAGSTER_URL") or DEFAULT_URL, help=url_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=url_help)  # also accepted after the command
    launch = argparse.ArgumentParser(add_help=False, parents=[common])
    launch.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ASSET.KEY=VALUE",
        help="a stage's setting, e.g. teacher_inputs.max_pairs_per_passage=8 (repeatable)",
    )
    launch.add_argument("--epochs", type=int, help="SFT epochs (student_checkpoint's num_train_epochs)")
    launch.add_argument("--student-base", metavar="PATH_OR_HUB_ID", help="the student's base model (student_base)")
    launch.add_argument("--teacher-url", help="an OpenAI-compatible endpoint as this run's teacher")
    launch.add_argument("--teacher-model", help="the model the teacher endpoint serves")
    launch.add_argument(
        "--teacher-key-env",
        default="OPENAI_API_KEY",
        help="the variable holding the endpoint's key, in the code location's environment",
    )
    launch.add_argument("--wait", action="store_true", help="follow the run with progress until it finishes")
    launch.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")

    commands = top.add_subparsers(dest="command", required=True)
    domains = commands.add_parser("domains", help="list or add domain partitions", parents=[common])
    domain_commands = domains.add_subparsers(dest="action", required=True)
    domain_commands.add_parser("list", parents=[common])
    domain_commands.add_parser("add", parents=[common]).add_argument("names", nargs="+", metavar="NAME")

    run = commands.add_parser("run", help="a domain's whole graph, another job or an asset selection", parents=[launch])
    run.add_argument("domain", nargs="?", help="the domain (none for an unpartitioned selection, e.g. leaderboard)")
    target = run.add_mutually_exclusive_group()
    target.add_argument("--job", help="nexa_job (default), distill_job, round_job")
    target.add_argument("--assets", help="comma-separated asset keys, e.g. teacher_inputs,teacher_outputs")
    for verb, selection in VERBS.items():
        what = selection.get("job") or ", ".join(selection["assets"])
        commands.add_parser(verb, help=f"one domain: {what}", parents=[launch]).add_argument("domain")
    commands.add_parser("round", help="one feedback round (round_job)", parents=[launch]).add_argument("domain")
    backfill = commands.add_parser("backfill", help="a job over several domains, one run each", parents=[launch])
    backfill.add_argument("domains", nargs="+", metavar="DOMAIN")
    backfill.add_argument("--job", default="nexa_job", help="nexa_job (default), distill_job, round_job")

    wait = commands.add_parser("wait", help="progress of a run or backfill until it finishes", parents=[common])
    wait.add_argument("id", metavar="ID")
    wait.add_argument("--backfill", action="store_true", help="ID is a backfill's")
    wait.add_argument("--timeout", type=float, help="give up after this many seconds")
    for name, what in (
        ("leaderboard", "every evaluated checkpoint, ranked"),
        ("checkpoints", "each domain's current student checkpoint"),
        ("releases", "each domain's latest release"),
    ):
        commands.add_parser(name, help=what, parents=[common])
    commands.add_parser("logs", help="a run's event log", parents=[common]).add_argument("run_id")
    distilled = commands.add_parser(
        "distilled",
        help="a domain's distilled student, released as <model>-distilled (serve: nexa-serve DOMAIN --distilled)",
        parents=[common],
    )
    distilled_commands = distilled.add_subparsers(dest="action", required=True)
    distilled_commands.add_parser(
        "promote", help="through its gate: merged and registered (distilled_release_job)", parents=[launch]
    ).add_argument("domain")
    distilled_commands.add_parser("list", help="each domain's latest distilled release", parents=[common])
    sweep = commands.add_parser("sweep", help="a grid of settings, each point a training run", parents=[common])
    sweep.add_argument("domain")
    sweep.add_argument("--grid", action="append", required=True, metavar="ASSET.KEY=V1,V2,...")
    sweep.add_argument("--random", type=int, default=0, metavar="N", help="N points drawn from the grid (0: all)")
    sweep.add_argument("--seed", type=int, default=17, help="of the draw")
    sweep.add_argument("--max-parallel", type=int, default=2, metavar="K", help="point runs queued at once")
    sweep.add_argument("--retries", type=int, default=1, help="runs again of a failed or killed point")
    sweep.add_argument("--set", action="append", default=[], metavar="ASSET.KEY=VALUE", help="on every point")
    replay = commands.add_parser("replay", help="rebuild a release from its record", parents=[common])
    replay.add_argument("domain")
    replay.add_argument("--version", type=int, required=True, help="the release's registry version")
    for command in (sweep, replay):
        command.add_argument("--no-wait", dest="wait", action="store_false", help="print the plan's run id and return")
        command.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    return top


def execute(forge: NexaForgeClient, args) -> int:
    command = args.command
    if command == "domains":
        if args.action == "list":
            print("\n".join(forge.domains()) or "no domains yet (nexa domains add NAME)")
        for name in getattr(args, "names", []):
            print(f"{name}: {'added' if forge.add_domain(name) else 'already a domain'}")
        return 0
    if command == "run":
        assets = args.assets.split(",") if args.assets else None
        return launched(forge, args, forge.run(args.domain, args.job, assets, **launch_options(args)))
    if command in VERBS or command == "round":
        return launched(forge, args, getattr(forge, command)(args.domain, **launch_options(args)))
    if command == "backfill":
        return launched(forge, args, forge.backfill(args.domains, args.job, **launch_options(args)), backfill=True)
    if command == "wait":
        return watch(forge, args.id, args.backfill, args.timeout)
    if command == "leaderboard":
        rows = forge.leaderboard()
        print(table(rows) if rows else "no evaluated checkpoints yet (nexa evaluate DOMAIN)")
    elif command == "checkpoints":
        show(forge.checkpoints(), CHECKPOINT_KEYS, "no checkpoint yet (nexa train DOMAIN)")
    elif command == "releases":
        show(forge.releases(), None, "no release yet (nexa deploy DOMAIN, once a checkpoint passes the release gate)")
    elif command == "distilled" and args.action == "promote":
        return launched(forge, args, forge.promote_distilled(args.domain, **launch_options(args)))
    elif command == "distilled":
        show(
            forge.distilled_releases(),
            None,
            "no distilled release yet (nexa run DOMAIN --job kd_job, then nexa distilled promote DOMAIN)",
        )
    elif command in ("sweep", "replay"):
        plan = (
            forge.sweep(
                args.domain,
                args.grid,
                random=args.random,
                seed=args.seed,
                max_parallel=args.max_parallel,
                retries=args.retries,
                settings=settings(args.set),
            )
            if command == "sweep"
            else forge.replay(args.domain, args.version)
        )
        print(plan, flush=True)
        if not args.wait:
            return 0
        done = forge.wait_sweep(plan, timeout=args.timeout, progress=lambda line: print(line, flush=True))
        if not done.ok:
            print(f"nexa: the {command} did not finish: {done.progress()}", file=sys.stderr)
            return 1
        results = forge.sweep_results(args.domain, done.sweep_id)
        print(replay_text(done.plan.tags, results["rows"][0]) if command == "replay" else sweep_text(results))
    elif command == "logs":
        for line in forge.logs(args.run_id):
            print(
                f"{line.timestamp:%H:%M:%S.%f}"[:-3] + f" {line.level:7s} {line.step or '-'} "
                f"{line.event or ''} {line.message}" + (f"\n  {line.error}" if line.error else "")
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return execute(NexaForgeClient(args.url), args)
    except NexaForgeError as exc:
        print(f"nexa: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
