"""Serving a release with an OpenAI-compatible API: `transformers serve` (chat completions, /health) on the merged
folder, on CPU or GPU, behind a small front (ModelFront) that introduces it. `transformers serve` pinned to one
model lists the hub cache in /v1/models and answers only to the name it was started with, so it is started on a
folder named as the model is served (`nexa-physics-v3`, a link to the merged weights: the name carries the registry
version, so a client's response cache never mixes the answers of two champions), and the front lists that model in
/v1/models and takes any of its names (the domain, the registered model, the served name); a name with another
version is refused with the served one named. For production GPUs, `vllm_command` is the equivalent vLLM command
(vLLM needs its own environment: no vLLM release accepts this project's transformers 5.23)."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from nexa_core.artifacts import MANIFEST

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


# --- the front: the endpoint a client talks to ---------------------------------------------------------------

# Headers of one hop, not passed on; the length is set again for a rewritten body, and each side names itself.
HOP_BY_HOP = {"connection", "keep-alive", "te", "trailers", "transfer-encoding", "upgrade", "content-length", "host"}
OWN_HEADERS = {"server", "date"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def model_names(release: dict) -> list[str]:
    """The names a release answers to: its served name (`<registered model>-v<N>`) first, then its registered
    model's (nexa-physics, nexa-physics-distilled) and its domain's. Another version's name is another release."""
    return [release["served_model"], release["registered_model"], release["domain"]]


def model_entry(release: dict) -> dict:
    """The served model as OpenAI's /v1/models lists one, with the other names it answers to."""
    return {
        "id": release["served_model"],
        "object": "model",
        "created": int(release["released_at"].timestamp()),
        "owned_by": "nexacompute",
        "aliases": model_names(release)[1:],
    }


def refusal(release: dict, requested) -> dict:
    """OpenAI's error for a model it does not serve, naming the one served here."""
    names = ", ".join(map(repr, model_names(release)))
    return {
        "error": {
            "message": f"model {requested!r} is not served here: this endpoint serves {release['served_model']} "
            f"({release['registered_model']} v{release['model_version']}, domain {release['domain']}); "
            f"ask for it as one of {names}",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


class ModelFront(ThreadingHTTPServer):
    """The endpoint in front of `transformers serve`: GET /v1/models lists the served model; a request naming it
    by any of its names goes on under the name the server was started with, any other name is refused (404,
    the served one named); everything else (/health, streamed answers) passes through as it is."""

    daemon_threads = True
    request_queue_size = 64  # the stdlib's 5 refuses a client's burst of concurrent calls

    def __init__(self, address: tuple[str, int], upstream: tuple[str, int], release: dict):
        self.upstream, self.release, self.names = upstream, release, model_names(release)
        super().__init__(address, FrontHandler)

    def start(self) -> ModelFront:
        threading.Thread(target=self.serve_forever, name="model-front", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked streams passed on as they come
    server: ModelFront

    def do_GET(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = unquote(urlsplit(self.path).path).rstrip("/")
        release = self.server.release
        if self.command == "GET" and path == "/v1/models":
            return self.answer(200, {"object": "list", "data": [model_entry(release)]})
        if self.command == "GET" and path.startswith("/v1/models/"):
            name = path.removeprefix("/v1/models/")
            return (
                self.answer(200, model_entry(release))
                if name in self.server.names
                else self.answer(404, refusal(release, name))
            )
        if body and self.headers.get_content_type() == "application/json":
            try:
                request = json.loads(body)
            except ValueError:
                request = None  # the server says what is wrong with it
            if isinstance(request, dict) and "model" in request:
                if request["model"] not in self.server.names:
                    return self.answer(404, refusal(release, request["model"]))
                body = json.dumps({**request, "model": self.server.names[0]}).encode()
        self.forward(body)

    do_POST = do_PUT = do_DELETE = do_OPTIONS = do_GET

    def answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def forward(self, body: bytes) -> None:
        """The request to the server, its answer back: a body of known length whole, else chunk by chunk as the
        server writes it (a streamed completion's events)."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(*self.server.upstream)
        try:
            upstream.request(
                self.command, self.path, body=body if body or self.command != "GET" else None, headers=headers
            )
            response = upstream.getresponse()
        except OSError as exc:
            upstream.close()
            host, port = self.server.upstream
            return self.answer(
                502,
                {
                    "error": {
                        "message": f"the model server at {host}:{port} did not answer: {exc}",
                        "type": "server_error",
                    }
                },
            )
        try:
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP | OWN_HEADERS:
                    self.send_header(key, value)
            length = response.getheader("Content-Length")
            if length is not None:
                self.send_header("Content-Length", length)
                self.end_headers()
                self.wfile.write(response.read())
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while chunk := response.read1(65536):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; closing the upstream ends the server's work on it
        finally:
            upstream.close()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the stdlib's name)
        pass  # the server's own log records the requests


def deployment_row(
    release: dict, release_asset: str, root_url: str, command: list[str], device: str, pid: int, ready: float
) -> dict:
    """The deployment table's row (schemas.DEPLOYMENT) of a release that answers at root_url; `release_asset`: the
    asset that released it (model_release, distilled_release)."""
    from datetime import datetime, timezone

    from nexa_core.ids import content_id

    started = datetime.now(timezone.utc)
    return {
        "domain": release["domain"],
        "deployment_id": content_id(release["domain"], root_url, started.isoformat(), pid),
        "endpoint_url": f"{root_url}/v1",
        "release_asset": release_asset,
        **{k: release[k] for k in ("served_model", "registered_model", "model_version", "release_id", "merged_uri")},
        "server": " ".join(command),
        "device": device,
        "pid": pid,
        "ready_seconds": ready,
        "started_at": started,
    }
