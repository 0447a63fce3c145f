"""Every setting taken from environment variables, read here and nowhere else. The code location
(nexa_assets/definitions.py) and the commands (nexa-run, nexa-domains) each read it once and pass on
what the resources and sensors need.

Variable (default): what reads it.

- DAGSTER_HOME (default: .dagster_home in the project): the Dagster instance of nexa-run and nexa-domains.
- DAGSTER_PG_URL (default: unset: SQLite under DAGSTER_HOME): set: the instance file stores runs, events, sensors
  and partitions in Postgres (resources/instance.py); Dagster reads the URL itself.
- NEXA_RAW_ROOT (default: data/raw): raw_folder_sensor (and the runs it requests), nexa-run, nexa-domains.
- NEXA_DELTA_ROOT (default: data/delta (a path, or s3://bucket/prefix)): the Delta IO manager and store.
- AWS_ENDPOINT_URL, AWS_REGION (or AWS_DEFAULT_REGION), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP: an
  s3:// Delta root.
- NEXA_ARTIFACT_ROOT (default: data/artifacts): the training launcher.
- NEXA_BASE_MODEL (default: smollm2-135m-instruct, pretrain_default.yaml's): the model every student starts from
  (student_base), unless its run config names one; nexa-tiny-llama for fast smoke runs and tests.
- NEXA_LAUNCHER_CONFIG (default: unset: local subprocesses): a YAML file of the launcher's settings (kind, image,
  gpus, ...), e.g. deploy/launcher-kubernetes.yaml.
- NEXA_REPORT_DIR (default: data/reports): the leaderboard's HTML report.
- MLFLOW_TRACKING_URI (default: sqlite:///data/mlflow.db): MLflow tracking.
- NEXA_MAX_ROUNDS, NEXA_MIN_IMPROVEMENT (default: 3, 0.0): feedback_loop_sensor's stop rules.
- NEXA_TEACHER_*, NEXA_JUDGE_* (default: the offline heuristic teacher; no judge): the teacher and judge resources.
- NEXA_UI_URL (default: unset): where nexa-ui answers; set, each asset's description in the Dagster UI links to its
  page there.
- NEXA_DAGSTER_URL (default: unset: http://127.0.0.1:3000, nexa_forge's): the Dagster UI nexa-ui's pages link to.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml
from dagster_deltalake import LocalConfig, S3Config

from resources.delta import PROJECT_ROOT
from resources.launcher import TrainingLauncher
from resources.reports import ReportFolder
from resources.student import StudentModel
from resources.teacher import TeacherResource
from resources.tracking import MlflowTracking

PG_URL_VARIABLE = "DAGSTER_PG_URL"  # postgresql://user:password@host:port/db; read by Dagster at run time


def _default(resource: type[dg.ConfigurableResource], field: str):
    """A resource's own default, so the value used when a variable is unset is defined once."""
    return resource.model_fields[field].default


def _number(environ: Mapping[str, str], name: str, kind: Callable[[str], float], default: float):
    value = environ.get(name)
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(
            f"{name}={value!r} is not {'an integer' if kind is int else 'a number'}; "
            f"unset it for the default ({default})"
        ) from None


def _endpoint(environ: Mapping[str, str], prefix: str, offline: TeacherResource) -> TeacherResource:
    """The resource configured by {prefix}_BASE_URL (or {prefix}_BACKEND=openai), {prefix}_MODEL,
    {prefix}_MODE (sync or batch), {prefix}_API_KEY_ENV (the key's variable, OPENAI_API_KEY by default)
    and {prefix}_OPTIONS (JSON of any other TeacherResource field, e.g. {"max_concurrency": 64,
    "budget_usd": 20}); `offline` when none is set."""
    base_url = environ.get(f"{prefix}_BASE_URL")
    if environ.get(f"{prefix}_BACKEND", "openai" if base_url else "") != "openai":
        return offline
    options = json.loads(environ.get(f"{prefix}_OPTIONS") or "{}")
    if "api_key" in options:  # a literal key would show in the UI's resource config
        raise ValueError(f"{prefix}_OPTIONS must not hold api_key; name its variable in {prefix}_API_KEY_ENV")
    return TeacherResource(
        backend="openai",
        base_url=base_url,
        model=environ.get(f"{prefix}_MODEL", "gpt-4o-mini"),
        mode=environ.get(f"{prefix}_MODE", "sync"),
        api_key=dg.EnvVar(environ.get(f"{prefix}_API_KEY_ENV", "OPENAI_API_KEY")),
        **options,
    )


def _delta(environ: Mapping[str, str]) -> tuple[str, LocalConfig | S3Config, dict[str, str]]:
    """(root uri, the IO manager's storage config, deltalake's storage options) for NEXA_DELTA_ROOT.

    An s3:// root is configured by endpoint and region only. Credentials are never copied into config
    (where the UI, run records and launched specs would show them): deltalake reads AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY (or a role's credentials) from the environment of whichever process writes.
    Commits are conditional puts (If-None-Match), which AWS S3 and most S3-compatible stores honour:
    never the unsafe rename, with which two writers can silently lose a commit."""
    root = environ.get("NEXA_DELTA_ROOT") or str(PROJECT_ROOT / "data" / "delta")
    if not root.startswith("s3://"):
        return str(Path(root).resolve()), LocalConfig(), {}  # not created here: the first write makes it
    region = environ.get("AWS_REGION", environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    endpoint = environ.get("AWS_ENDPOINT_URL")
    plain = {"AWS_REGION": region, **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {})}
    if environ.get("AWS_ALLOW_HTTP"):  # S3Config has no allow_http field: deltalake's own option carries it
        plain["AWS_ALLOW_HTTP"] = environ["AWS_ALLOW_HTTP"]
    return root, S3Config(region=region, **({"endpoint": endpoint} if endpoint else {})), plain


def _launcher_settings(environ: Mapping[str, str]) -> dict:
    """The launcher's settings from the YAML file NEXA_LAUNCHER_CONFIG names (NEXA_ARTIFACT_ROOT, when
    set, wins over its artifact_root); a wrong key is an error naming the file and the known keys."""
    name = environ.get("NEXA_LAUNCHER_CONFIG")
    if not name:
        return {}
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"NEXA_LAUNCHER_CONFIG={name}: no such file")
    settings = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(settings) - set(TrainingLauncher.model_fields))
    if unknown:
        raise ValueError(
            f"NEXA_LAUNCHER_CONFIG={name}: unknown launcher settings {unknown}; "
            f"known: {sorted(TrainingLauncher.model_fields)}"
        )
    return settings


@dataclass(frozen=True)
class Environment:
    dagster_home: Path
    postgres: bool  # DAGSTER_PG_URL is set: Postgres instance storage
    raw_root: Path
    delta_root: str
    delta_storage: LocalConfig | S3Config  # the IO manager's
    storage_options: dict[str, str]  # the same, as deltalake's options (DeltaStore)
    artifact_root: str
    base_model: str
    launcher: dict  # TrainingLauncher settings from NEXA_LAUNCHER_CONFIG (empty: its defaults)
    report_dir: str
    tracking_uri: str
    max_rounds: int
    min_improvement: float
    teacher: TeacherResource
    judge: TeacherResource
    ui_url: str | None = None  # NEXA_UI_URL: nexa-ui, which the assets' descriptions link to
    dagster_url: str | None = None  # NEXA_DAGSTER_URL: the Dagster UI, which nexa-ui links to

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """The settings from `environ` (os.environ by default), each with its default when unset or empty."""
        environ = os.environ if environ is None else environ
        delta_root, delta_storage, storage_options = _delta(environ)
        launcher = _launcher_settings(environ)
        return cls(
            dagster_home=Path(environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home").resolve(),
            postgres=bool(environ.get(PG_URL_VARIABLE)),
            raw_root=Path(environ.get("NEXA_RAW_ROOT") or PROJECT_ROOT / "data" / "raw").resolve(),
            delta_root=delta_root,
            delta_storage=delta_storage,
            storage_options=storage_options,
            artifact_root=(
                environ.get("NEXA_ARTIFACT_ROOT")
                or launcher.get("artifact_root")
                or _default(TrainingLauncher, "artifact_root")
            ),
            base_model=environ.get("NEXA_BASE_MODEL") or _default(StudentModel, "base_model"),
            launcher=launcher,
            report_dir=environ.get("NEXA_REPORT_DIR") or _default(ReportFolder, "folder"),
            tracking_uri=environ.get("MLFLOW_TRACKING_URI") or _default(MlflowTracking, "tracking_uri"),
            max_rounds=_number(environ, "NEXA_MAX_ROUNDS", int, 3),
            min_improvement=_number(environ, "NEXA_MIN_IMPROVEMENT", float, 0.0),
            teacher=_endpoint(environ, "NEXA_TEACHER", TeacherResource()),
            judge=_endpoint(environ, "NEXA_JUDGE", TeacherResource(backend="none", model="none")),
            ui_url=environ.get("NEXA_UI_URL") or None,
            dagster_url=environ.get("NEXA_DAGSTER_URL") or None,
        )
