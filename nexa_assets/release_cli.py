"""The release commands, on the code location's resources (the Delta root and MLflow of the environment):

nexa-serve DOMAIN [--port 8000] [--host 127.0.0.1] [--device auto] [--dtype auto]
    serve the domain's champion with an OpenAI-compatible API (`transformers serve` on its merged
    folder, behind a front that lists it in /v1/models and answers to DOMAIN, nexa-DOMAIN and
    nexa-DOMAIN-vN) until stopped; the deployment is recorded (the deployment table and asset) once it answers.
nexa-serve DOMAIN --distilled
    the same for the domain's distilled release (nexa-DOMAIN-distilled, distilled_release).
nexa-serve DOMAIN --vllm
    print the vLLM command for the champion instead (for production GPUs, in vLLM's own environment).
nexa-release-rows DOMAIN [--version N] [--split train]
    print, one JSON object a line, the SFT rows a release was trained on (Delta time travel to the
    sft_dataset version it records); the champion by default.
"""

import argparse
import json
import signal
import sys

import polars as pl

from nexa_assets.cli import ensure_dagster_home
from nexa_core import schemas
from nexa_core.models.checkpoint import CheckpointError, verify_checkpoint
from nexa_core.release.gate import ReleaseError
from nexa_core.release.records import DISTILLED_LINE, champion_release, release_record, trained_rows
from nexa_core.release.serve import (
    ModelFront,
    ServeError,
    deployment_row,
    free_port,
    model_names,
    served_folder,
    start_server,
    stop_server,
    transformers_serve_command,
    vllm_command,
    wait_until_ready,
)
from nexa_core.tables import DEPLOYMENT, DISTILLED_RELEASE, MODEL_RELEASE


def resources():
    """(environment, Delta store, MLflow tracking) of the code location."""
    from nexa_assets.definitions import ENVIRONMENT, defs  # the code location: heavy, so only once a command runs

    return ENVIRONMENT, defs.resources["delta"], defs.resources["tracking"]


def fail(command: str, message: str) -> int:
    print(f"{command}: {message}", file=sys.stderr)
    return 2


def record_deployment(env, delta, row: dict) -> None:
    """A row of the deployment table, and a materialization of the deployment asset in DAGSTER_HOME."""
    import dagster as dg

    delta.append(DEPLOYMENT, pl.DataFrame([row], schema=schemas.DEPLOYMENT))
    ensure_dagster_home(env.dagster_home, env.postgres)
    with dg.DagsterInstance.get() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=DEPLOYMENT,
                partition=row["domain"],
                description=f"{row['served_model']} ({row['release_asset']}) at {row['endpoint_url']}",
                metadata={
                    "endpoint_url": dg.MetadataValue.url(row["endpoint_url"]),
                    "release": dg.MetadataValue.asset(dg.AssetKey(row["release_asset"])),
                    "served_model": row["served_model"],
                    "registered_model": row["registered_model"],
                    "model_version": row["model_version"],
                    "started_at": row["started_at"].isoformat(),
                    "ready_seconds": row["ready_seconds"],
                    "device": row["device"],
                    "pid": row["pid"],
                },
            )
        )


def serve_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nexa-serve", description="Serve a domain's champion with an OpenAI-compatible chat completions API."
    )
    parser.add_argument("domain")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:0, ...")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for the first answer")
    parser.add_argument("--vllm", action="store_true", help="print the vLLM command for the champion and exit")
    parser.add_argument(
        "--distilled", action="store_true", help="the champion of the domain's distilled students (distilled_release)"
    )
    args = parser.parse_args(argv)
    env, delta, tracking = resources()
    line = DISTILLED_LINE if args.distilled else ""
    try:
        version = tracking.champion_version(args.domain, line)
        release = champion_release(delta.tables(), args.domain, version, tracking.registered_model(args.domain, line))
        verify_checkpoint(release["merged_uri"], json.loads(release["files_sha256"]))
    except (ReleaseError, CheckpointError) as exc:
        return fail("nexa-serve", str(exc))
    served = release["served_model"]
    if args.vllm:
        print(vllm_command(release["merged_uri"], served, args.port))
        return 0
    folder = served_folder(release["merged_uri"], served)
    log_file = folder / f"server-{args.port}.log"
    inner = ("127.0.0.1", free_port())  # transformers serve, reached through the front only
    command = transformers_serve_command(served, *inner, args.device, args.dtype)
    try:
        front = ModelFront((args.host, args.port), inner, release)
    except OSError as exc:
        return fail("nexa-serve", f"cannot listen on {args.host}:{args.port}: {exc}")
    server = start_server(command, folder, log_file)
    front.start()

    def stop(*_) -> None:  # SIGTERM or SIGINT: leave, and the finally below stops the server
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    root_url = f"http://{args.host}:{args.port}"
    try:  # whatever ends this process ends the server with it
        try:
            ready = wait_until_ready(server, root_url, args.ready_timeout, log_file)
        except ServeError as exc:
            return fail("nexa-serve", f"domain {args.domain}: {served} did not start: {exc}")
        asset = DISTILLED_RELEASE if args.distilled else MODEL_RELEASE
        row = deployment_row(release, asset, root_url, command, args.device, server.pid, ready)
        record_deployment(env, delta, row)
        print(
            f"nexa-serve: {args.domain} champion {release['registered_model']} v{release['model_version']} answers "
            f"at {row['endpoint_url']} as model {served!r}, also {' and '.join(map(repr, model_names(release)[1:]))} "
            f"(ready in {ready:.1f} s; log {log_file})",
            flush=True,
        )
        return server.wait()
    finally:
        front.stop()
        stop_server(server)


def rows_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nexa-release-rows", description="Print the SFT rows a release was trained on, one JSON object a line."
    )
    parser.add_argument("domain")
    parser.add_argument("--version", type=int, help="registered model version (default: the champion)")
    parser.add_argument("--split", default="train", choices=["train", "validation", "test"])
    args = parser.parse_args(argv)
    _, delta, tracking = resources()
    name, tables = tracking.registered_model(args.domain), delta.tables()
    try:
        release = (
            release_record(tables, args.domain, args.version, name)
            if args.version is not None
            else champion_release(tables, args.domain, tracking.champion_version(args.domain), name)
        )
    except ReleaseError as exc:
        return fail("nexa-release-rows", str(exc))
    rows = trained_rows(delta.tables(), release, args.split)
    for row in rows.iter_rows(named=True):
        print(json.dumps(row, ensure_ascii=False, default=str))
    print(
        f"nexa-release-rows: {release['registered_model']} v{release['model_version']} (checkpoint "
        f"{release['checkpoint_id']}): {rows.height} {args.split} rows of sft_dataset v{release['sft_version']}",
        file=sys.stderr,
    )
    return 0
