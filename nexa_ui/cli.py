"""nexa-ui [--port 8501] [--host 127.0.0.1] [--delta-root URI] [--dagster-url URL]

The inspection app on the graph's own tables: the Delta root and its storage options come from the environment as
the graph reads it (resources/environment.py: NEXA_DELTA_ROOT, AWS_* for an s3:// root), the Dagster UI's address
from NEXA_DAGSTER_URL; the flags override both. The process becomes `streamlit run nexa_ui/app.py` (headless, no
usage statistics, no file watcher), so its PID is the server's and SIGTERM stops it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nexa_forge.client import DEFAULT_URL
from nexa_ui.settings import UiSettings
from resources.environment import Environment

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(settings: UiSettings, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless=true",
        f"--server.address={host}",
        f"--server.port={port}",
        "--server.fileWatcherType=none",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=viewer",
        "--",
        *settings.argv(),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nexa-ui", description="Look at the data: read-only views of the Delta tables."
    )
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--delta-root", help="a folder or s3://bucket/prefix (default: NEXA_DELTA_ROOT, else data/delta)"
    )
    parser.add_argument(
        "--dagster-url", help=f"the Dagster UI the views link to (default: NEXA_DAGSTER_URL, else {DEFAULT_URL})"
    )
    args = parser.parse_args(argv)
    environ = dict(os.environ) | ({"NEXA_DELTA_ROOT": args.delta_root} if args.delta_root else {})
    env = Environment.read(environ)
    settings = UiSettings(env.delta_root, args.dagster_url or env.dagster_url or DEFAULT_URL, env.storage_options)
    print(
        f"nexa-ui: http://{args.host}:{args.port} on {settings.delta_root} (Dagster UI: {settings.dagster_url})",
        flush=True,
    )
    command = streamlit_command(settings, args.host, args.port)
    os.execve(command[0], command, os.environ | {"STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"})
    return 0  # not reached: the process is streamlit's now
