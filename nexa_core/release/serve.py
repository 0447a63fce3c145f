"""Serving a release with an OpenAI-compatible API: `transformers serve` (chat completions, /health) on
the merged folder, on CPU or GPU. `transformers serve` pinned to one model answers only to the name it
was started with, so it is started on a folder named as the model is served (`nexa-physics-v3`, a link
to the merged weights): the name carries the registry version, so a client's response cache never mixes
the answers of two champions. For production GPUs, `vllm_command` is the equivalent vLLM command (vLLM
needs its own environment: no vLLM release accepts this project's transformers 5.23)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from nexa_core.train.student import MANIFEST

# The merged folder is local: nothing is fetched from the hub, and the CLI does not ask PyPI for updates.
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


class ServeError(RuntimeError):
    pass


def served_folder(merged_uri: str, served_model: str) -> Path:
    """The folder to start the server in: it holds `served_model`, a link to the merged weights."""
    merged = Path(merged_uri).resolve()
    folder = merged.parent / "serve"
    folder.mkdir(exist_ok=True)
    link = folder / served_model
    if link.is_symlink() and link.resolve() != merged:
        link.unlink()
    if not link.exists():
        link.symlink_to(merged, target_is_directory=True)
    return folder


def transformers_serve_command(served_model: str, host: str, port: int, device: str, dtype: str) -> list[str]:
    cli = Path(sys.executable).with_name("transformers")  # the CLI of this environment's transformers
    return [
        str(cli) if cli.exists() else "transformers",
        "serve",
        served_model,
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        device,
        "--dtype",
        dtype,
        "--log-level",
        "warning",
    ]


def serving_env(environ: Mapping[str, str]) -> dict[str, str]:
    from huggingface_hub import constants

    env = {**environ, **OFFLINE}
    # /v1/models lists the hub cache, and answers 500 when that folder does not exist
    Path(env.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).mkdir(parents=True, exist_ok=True)
    return env


def wait_until_ready(proc: subprocess.Popen, root_url: str, timeout_s: float, log_file: Path) -> float:
    """Seconds until the server's /health answers; a server that exits or never answers is an error that
    quotes the end of its log."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise ServeError(
                f"the server exited with code {proc.returncode} before answering; the end of "
                f"{log_file}:\n{_tail(log_file)}"
            )
        try:
            with urllib.request.urlopen(f"{root_url}/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise ServeError(
        f"the server did not answer {root_url}/health within {timeout_s:.0f} s; the end of "
        f"{log_file}:\n{_tail(log_file)}"
    )


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"


def vllm_command(merged_uri: str, served_model: str, port: int = 8000) -> str:
    """The vLLM command for a release: a LoRA release as its adapter over its base (a LoRA module, so
    one vLLM server can hold several domains' adapters over one base), a full fine-tune as its merged
    weights."""
    merged = json.loads((Path(merged_uri) / MANIFEST).read_text())
    adapter = Path(merged["merged_from"])
    if (adapter / "adapter_config.json").is_file():
        rank = json.loads((adapter / "adapter_config.json").read_text())["r"]
        args = [
            "vllm",
            "serve",
            merged["base_model_path"],
            "--enable-lora",
            "--lora-modules",
            f"{served_model}={adapter}",
            "--max-lora-rank",
            str(max(8, 1 << (rank - 1).bit_length())),
        ]
    else:
        args = ["vllm", "serve", str(merged_uri), "--served-model-name", served_model]
    return shlex.join(args + ["--port", str(port)])


def start_server(command: list[str], folder: Path, log_file: Path) -> subprocess.Popen:
    """The server in the served folder, its output appended to log_file."""
    with log_file.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=folder,
            env=serving_env(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def deployment_row(release: dict, root_url: str, command: list[str], device: str, pid: int, ready: float) -> dict:
    """The deployment table's row (schemas.DEPLOYMENT) of a release that answers at root_url."""
    from datetime import datetime, timezone

    from nexa_core.ids import content_id

    started = datetime.now(timezone.utc)
    return {
        "domain": release["domain"],
        "deployment_id": content_id(release["domain"], root_url, started.isoformat(), pid),
        "endpoint_url": f"{root_url}/v1",
        **{k: release[k] for k in ("served_model", "registered_model", "model_version", "release_id", "merged_uri")},
        "server": " ".join(command),
        "device": device,
        "pid": pid,
        "ready_seconds": ready,
        "started_at": started,
    }
