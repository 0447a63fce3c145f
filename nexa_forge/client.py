"""NexaForgeClient: NexaCompute driven through the Dagster webserver's GraphQL API, the platform's only
API. dagster-graphql's DagsterGraphQLClient launches runs; domains, backfills, run status with step
progress, materialization metadata and logs go as raw GraphQL (nexa_forge/queries.py), since that
client has no call for them. This package talks to the webserver only: it never imports the code
location, so it works from any machine that can reach the UI's URL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from nexa_forge import queries
from nexa_forge.settings import SettingError, add_setting, grid_values

DEFAULT_URL = "http://127.0.0.1:3000"
WHOLE_GRAPH = "nexa_job"  # its partitions are the domains
UNREACHABLE_GRACE = 300.0  # seconds a wait goes on polling a webserver that does not answer
SWEEP_POINTS = "sweep_point_job"  # a sweep's point: the training and evaluation assets
SWEEP_TAG = "nexa/sweep"  # on a sweep's plan, points and results (and a replay's)
ASSET_JOB = "__ASSET_JOB"  # Dagster's implicit job over every asset: runs any selection
START_HINT = "start one with `dagster dev -m nexa_assets.definitions`, or point --url / NEXA_DAGSTER_URL at it"

# The Nexa Forge guide's verbs, as this graph's jobs and asset selections (docs/sdk.md)
VERBS: dict[str, dict] = {
    "generate": {"assets": ["raw_documents", "teacher_inputs", "teacher_outputs"]},
    "distill": {"job": "distill_job"},
    "train": {"assets": ["student_base", "student_checkpoint"]},
    "evaluate": {"assets": ["eval_predictions", "eval_metrics", "benchmark_scores", "leaderboard"]},
    "deploy": {"assets": ["model_release"]},
}
ROUND_JOB = "round_job"
# A domain's distilled student, released as its own registered model (<model>-distilled) through its own gate
DISTILLED_RELEASE = "distilled_release"
DISTILLED_RELEASE_JOB = "distilled_release_job"

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class NexaForgeError(Exception):
    """The platform refused a request or could not answer it; the message says what to do."""


class ServerUnreachable(NexaForgeError):
    """No Dagster webserver answers at the URL."""


class CodeLocationError(NexaForgeError):
    """The webserver answers, but the NexaCompute code location failed to load there."""


class UnknownDomain(NexaForgeError):
    """The domain is not a partition of the job."""


class UnknownAsset(NexaForgeError):
    """The code location defines no asset of that key."""


class StillRunning(NexaForgeError, TimeoutError):
    """wait() gave up before the run or backfill finished; it goes on in Dagster."""


@dataclass(frozen=True)
class Run:
    run_id: str
    job: str
    status: str  # Dagster's run status: QUEUED, STARTED, SUCCESS, FAILURE, CANCELED, ...
    domain: str | None
    steps: dict[str, str]  # step key -> IN_PROGRESS, SUCCESS, FAILURE, SKIPPED (steps not begun are absent)
    steps_total: int
    started: datetime | None
    ended: datetime | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS"

    def progress(self) -> str:
        done = sum(status != "IN_PROGRESS" for status in self.steps.values())
        line = (
            f"run {self.run_id} ({self.job}, {self.domain or 'no domain'}): {self.status}, "
            f"{done}/{self.steps_total} steps done"
        )
        for label, wanted in (("running", "IN_PROGRESS"), ("failed", "FAILURE")):
            steps = [step for step, status in self.steps.items() if status == wanted]
            if steps:
                line += f"; {label}: {', '.join(steps)}"
        return line


@dataclass(frozen=True)
class Backfill:
    backfill_id: str
    status: str  # Dagster's backfill status: REQUESTED, COMPLETED_SUCCESS, COMPLETED_FAILED, ...
    runs: dict[str, tuple[str | None, str | None]]  # domain -> (run id, run status); None before it is launched
    error: str | None = None

    @property
    def finished(self) -> bool:
        # A job backfill's runs finish before the daemon's next pass marks the backfill complete
        return self.status in BACKFILL_FINISHED or (
            bool(self.runs) and all(status in FINISHED for _, status in self.runs.values())
        )

    @property
    def ok(self) -> bool:
        return self.finished and self.error is None and all(status == "SUCCESS" for _, status in self.runs.values())

    def progress(self) -> str:
        runs = ", ".join(f"{domain} {status or 'waiting'}" for domain, (_, status) in self.runs.items())
        return f"backfill {self.backfill_id}: {self.status}; {runs}" + (f"; {self.error}" if self.error else "")


@dataclass(frozen=True)
class Sweep:
    """A sweep (or a replay, a sweep of one point) as it stands: its plan's run, its points' runs, its results."""

    plan: Run
    sweep_id: str | None  # known once the plan has run
    points: dict[int, list[str]]  # point -> its runs' statuses, oldest first
    results: str | None  # the status of its newest results run; None before one

    @property
    def finished(self) -> bool:
        return (self.plan.finished and not self.plan.ok) or self.results in FINISHED

    @property
    def ok(self) -> bool:
        return self.results == "SUCCESS"

    def progress(self) -> str:
        if not self.plan.ok:
            return f"sweep plan {self.plan.run_id}: {self.plan.status}"
        done = sum("SUCCESS" in statuses for statuses in self.points.values())
        running = sum(statuses[-1] not in FINISHED for statuses in self.points.values())
        return (
            f"sweep {self.sweep_id}: {done} point(s) done, {running} running or queued, "
            f"{sum(len(s) for s in self.points.values())} run(s) in all; results {self.results or 'not yet'}"
        )


@dataclass(frozen=True)
class Materialization:
    asset: str
    domain: str | None
    run_id: str
    timestamp: datetime
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    level: str
    step: str | None
    event: str | None  # Dagster's event type, e.g. STEP_SUCCESS; None for a plain log message
    message: str
    error: str | None = None


@dataclass(frozen=True)
class Job:
    """What a launch is checked against: the job's domains, its ops' settings and its assets."""

    name: str
    domains: list[str]
    settings: dict[str, set[str]]  # op name (an asset's op is named after it) -> its settings, dotted
    assets: dict[str, bool]  # asset -> partitioned by domain; the other ops are asset checks
    partitions_def: str | None  # the dynamic partitions definition the domains belong to

    def check_assets(self, assets: Iterable[str]) -> None:
        unknown = [asset for asset in assets if asset not in self.assets]
        if unknown:
            raise UnknownAsset(
                f"no asset {', '.join(map(repr, unknown))} in {self.name}; assets: {', '.join(sorted(self.assets))}"
            )

    def check_domain(self, domain: str | None, url: str, assets: Iterable[str] | None = None) -> None:
        if domain is None:
            if any(self.assets[asset] for asset in (self.assets if assets is None else assets)):
                raise NexaForgeError(
                    f"{self.name} runs one domain at a time: name one of "
                    f"{', '.join(self.domains) or '(none yet: add one first)'}"
                )
        elif domain not in self.domains:
            raise UnknownDomain(
                f"no domain {domain!r} at {url}; domains: {', '.join(self.domains) or 'none yet'}. "
                f"Add it with `nexa domains add {domain}` (NexaForgeClient.add_domain), or put its "
                f"files in a folder {domain}/ under the raw root for the raw folder sensor"
            )

    def ops_config(self, settings: Mapping[str, Any]) -> dict:
        """{"ASSET.KEY": value} as run config: a setting of the asset's config (dotted for nested keys), as
        nexa-run's --set does."""
        ops: dict = {}
        fields = {asset: self.settings.get(asset, set()) for asset in self.assets}
        for target, value in settings.items():
            try:
                add_setting(ops, fields, self.name, target, value)
            except SettingError as exc:
                raise NexaForgeError(f"setting {target}: {exc}") from None
        return ops


def setting_keys(config_type: dict, prefix: str = "") -> set[str]:
    """The dotted keys of a config type as GraphQL gives it, nested ones included (`lora`, `lora.r`)."""
    keys = set()
    for entry in config_type.get("fields") or []:
        keys.add(prefix + entry["name"])
        keys |= setting_keys(entry.get("configType") or {}, f"{prefix}{entry['name']}.")
    return keys


def openai_teacher(base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", **options) -> dict:
    """The teacher resource's config for one run: an OpenAI-compatible endpoint. The key goes by the name of
    its variable in the code location's environment, never as a value. `options`: any other field of
    resources/teacher.py's TeacherResource (mode, max_concurrency, budget_usd, ...)."""
    return {"backend": "openai", "base_url": base_url, "model": model, "api_key": {"env": api_key_env}, **options}


def merge(base: dict, extra: Mapping) -> dict:
    """Nested dicts merged key by key; `extra` wins."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, Mapping) else value
    return out


def metadata_value(entry: dict) -> Any:
    """A metadata entry's value as Python: numbers, text, parsed JSON, {column: type} for a table schema."""
    kind = entry["__typename"]
    if kind == "IntMetadataEntry":  # intValue is null past 32 bits
        return int(entry["intRepr"])
    if kind == "FloatMetadataEntry":
        return entry["floatValue"] if entry["floatValue"] is not None else float(entry["floatRepr"])
    if kind == "JsonMetadataEntry":
        return json.loads(entry["jsonString"])
    if kind == "TimestampMetadataEntry":
        return _time(entry["timestamp"], 1)
    if kind == "AssetMetadataEntry":
        return "/".join(entry["assetKey"]["path"])
    if kind == "TableSchemaMetadataEntry":
        return {column["name"]: column["type"] for column in entry["schema"]["columns"]}
    values = [value for key, value in entry.items() if key not in ("__typename", "label")]
    return values[0] if len(values) == 1 else None  # NullMetadataEntry, or a kind this client does not read


def _time(millis: str | float | None, unit: float = 1000) -> datetime | None:
    return None if millis is None else datetime.fromtimestamp(float(millis) / unit, timezone.utc)


class NexaForgeClient:
    """A client of one Dagster webserver running the NexaCompute code location, e.g.

    forge = NexaForgeClient("http://127.0.0.1:3000")
    forge.add_domain("physics")
    run = forge.wait(forge.distill("physics"), progress=print)
    rows = {m.domain: m.metadata["dagster/row_count"] for m in forge.latest("sft_dataset")}
    """

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 60.0):
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NexaForgeError(f"{url!r} is not a webserver URL; expected e.g. {DEFAULT_URL}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._dagster = DagsterGraphQLClient(
            parts.hostname,
            port_number=parts.port,
            use_https=parts.scheme == "https",
            timeout=int(timeout),
            path_prefix=parts.path,
        )
        self._repository: dict | None = None  # the code location's repository selector, read once
        self._jobs: list[str] = []

    # --- transport ------------------------------------------------------------------------------

    def _query(self, document: str, **variables) -> dict:
        try:
            response = self._session.post(
                f"{self.url}/graphql", json={"query": document, "variables": variables}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ServerUnreachable(
                f"no Dagster webserver answers at {self.url} ({type(exc).__name__}); {START_HINT}"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or ("data" not in body and "errors" not in body):
            raise ServerUnreachable(
                f"{self.url} answered HTTP {response.status_code}, but no Dagster GraphQL API is "
                f"at {self.url}/graphql; check the URL's host, port and path prefix"
            )
        if body.get("errors"):
            messages = "; ".join(error.get("message", str(error)) for error in body["errors"])
            raise NexaForgeError(
                f"the webserver at {self.url} refused the request: {messages} (is it Dagster 1.13, like this client?)"
            )
        return body["data"]

    @staticmethod
    def _answer(result: dict, wanted: str, what: str) -> dict:
        """A `...OrError` field's value, or its error as a NexaForgeError."""
        if result["__typename"] == wanted:
            return result
        error = {"AssetNotFoundError": UnknownAsset}.get(result["__typename"], NexaForgeError)
        raise error(f"{what}: {result.get('message') or result['__typename']}")

    def repository(self) -> dict:
        """The selector of the code location's repository (one location is loaded by `dagster dev`)."""
        if self._repository is None:
            data = self._query(queries.REPOSITORIES)
            repos = self._answer(data["repositoriesOrError"], "RepositoryConnection", "listing code locations")["nodes"]
            if not repos:
                broken = [
                    f"{entry['name']}: {entry['locationOrLoadError']['message']}"
                    for entry in (data.get("workspaceOrError") or {}).get("locationEntries", [])
                    if (entry.get("locationOrLoadError") or {}).get("__typename") == "PythonError"
                ]
                if broken:
                    raise CodeLocationError(f"the code location at {self.url} failed to load: {' | '.join(broken)}")
                raise NexaForgeError(
                    f"the webserver at {self.url} has no code location loaded yet (it may still be starting)"
                )
            ours = next((r for r in repos if WHOLE_GRAPH in {job["name"] for job in r["pipelines"]}), repos[0])
            self._repository = {"repositoryName": ours["name"], "repositoryLocationName": ours["location"]["name"]}
            self._jobs = [job["name"] for job in ours["pipelines"] if not job["name"].startswith("__")]
        return self._repository

    def _launched(self, launch: Callable[[], str]) -> str:
        """A run launched through dagster-graphql's client, its errors said plainly."""
        try:
            return launch()
        except DagsterGraphQLClientError as exc:
            kind, detail = (exc.args + (None,))[:2]
            if kind and str(kind).startswith("Error when connecting"):
                raise ServerUnreachable(f"no Dagster webserver answers at {self.url}; {START_HINT}") from exc
            if isinstance(detail, list):  # config validation errors
                detail = "; ".join(error.get("message", str(error)) for error in detail)
            raise NexaForgeError(f"the run was not launched: {kind}" + (f": {detail}" if detail else "")) from exc

    # --- domains --------------------------------------------------------------------------------

    def job(self, name: str = WHOLE_GRAPH) -> Job:
        """A job's domains, settings and assets, read now (domains come and go)."""
        repository = self.repository()
        result = self._query(queries.JOB, selector={**repository, "pipelineName": name})["pipelineOrError"]
        if result["__typename"] == "PipelineNotFoundError":
            raise NexaForgeError(f"no job {name!r} at {self.url}; jobs: {', '.join(self._jobs)}")
        pipeline = self._answer(result, "Pipeline", f"reading job {name}")
        settings, assets, definitions = {}, {}, set()
        for op in pipeline["solids"]:
            config_type = (op["definition"].get("configField") or {}).get("configType") or {}
            settings[op["name"]] = setting_keys(config_type)
            for node in op["definition"].get("assetNodes", []):
                assets[op["name"]] = node["isPartitioned"]
                definitions |= {
                    d["dynamicPartitionsDefinitionName"]
                    for d in (node["partitionDefinition"] or {}).get("dimensionTypes", [])
                }
        definitions.discard(None)
        return Job(
            name,
            list(pipeline["partitionKeysOrError"]["partitionKeys"]),
            settings,
            assets,
            min(definitions, default=None),
        )

    def domains(self) -> list[str]:
        """The domain partitions, in the order they were added."""
        return self.job().domains

    def add_domain(self, name: str) -> bool:
        """Add a domain partition; False when it already is one. Its raw files belong in <raw root>/<name>/
        on the code location's machine: this adds the partition only."""
        if not name or name != name.strip() or "/" in name:
            raise NexaForgeError(f"{name!r} is not a domain name; use the name of its raw folder, e.g. physics")
        definition = self.job().partitions_def
        if definition is None:
            raise NexaForgeError(f"{WHOLE_GRAPH} at {self.url} is not partitioned by a dynamic domain partition")
        result = self._query(
            queries.ADD_DYNAMIC_PARTITION, key=name, definition=definition, repository=self.repository()
        )["addDynamicPartition"]
        if result["__typename"] == "DuplicateDynamicPartitionError":
            return False
        self._answer(result, "AddDynamicPartitionSuccess", f"adding domain {name}")
        return True

    # --- runs -----------------------------------------------------------------------------------

    def run_config(
        self,
        job: Job,
        config: Mapping | None = None,
        settings: Mapping[str, Any] | None = None,
        epochs: int | None = None,
        student_base: str | None = None,
        teacher: Mapping | None = None,
    ) -> dict:
        """Run config from the named knobs, ASSET.KEY `settings` and raw `config` (which wins)."""
        wanted = dict(settings or {})
        if epochs is not None:
            wanted["student_checkpoint.num_train_epochs"] = epochs
        if student_base is not None:
            wanted["student_base.base_model"] = student_base
        run_config: dict = {"ops": job.ops_config(wanted)} if wanted else {}
        if teacher is not None:
            # Run config replaces the code location's teacher whole: a bare model name would turn it into
            # the offline heuristic teacher under an LLM's name
            if "backend" not in teacher or (teacher["backend"] == "openai" and not teacher.get("base_url")):
                raise NexaForgeError(
                    "a run's teacher replaces the code location's teacher whole: give backend and, "
                    "for an endpoint, base_url and model (nexa_forge.openai_teacher(...))"
                )
            run_config["resources"] = {"teacher": {"config": dict(teacher)}}
        return merge(run_config, config or {})

    def run(
        self,
        domain: str | None,
        job: str | None = None,
        assets: Iterable[str] | None = None,
        *,
        config: Mapping | None = None,
        settings: Mapping[str, Any] | None = None,
        epochs: int | None = None,
        student_base: str | None = None,
        teacher: Mapping | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Launch `job` (the whole graph by default) or an asset selection for one domain; the run id.
        `epochs` and `student_base` set student_checkpoint's and student_base's config, `teacher` the teacher
        resource (openai_teacher(...)), `settings` any stage's setting as {"ASSET.KEY": value}."""
        assets = list(assets) if assets is not None else None
        info = self.job(job or (ASSET_JOB if assets else WHOLE_GRAPH))
        info.check_assets(assets or [])
        info.check_domain(domain, self.url, assets)
        run_config = self.run_config(info, config, settings, epochs, student_base, teacher)
        run_tags = {**({"dagster/partition": domain} if domain else {}), **(tags or {})}
        repo = self.repository()
        return self._launched(
            lambda: self._dagster.submit_job_execution(
                info.name,
                repo["repositoryLocationName"],
                repo["repositoryName"],
                run_config=run_config,
                tags=run_tags,
                asset_selection=assets,
            )
        )

    def generate(self, domain: str, **options) -> str:
        """The teacher writes question/answer pairs: raw documents -> teacher inputs -> teacher outputs."""
        return self.run(domain, **VERBS["generate"], **options)

    def distill(self, domain: str, **options) -> str:
        """Raw text to SFT sets (distill_job): generate, then filter and package."""
        return self.run(domain, **VERBS["distill"], **options)

    def train(self, domain: str, **options) -> str:
        """The student reads its domain (student_base), then is fine-tuned on the SFT set (student_checkpoint)."""
        return self.run(domain, **VERBS["train"], **options)

    def evaluate(self, domain: str, **options) -> str:
        """The checkpoint against its base on the test split and the benchmark suites, and the leaderboard."""
        return self.run(domain, **VERBS["evaluate"], **options)

    def deploy(self, domain: str, **options) -> str:
        """Promote the checkpoint through the release gate (the model_release asset)."""
        return self.run(domain, **VERBS["deploy"], **options)

    def round(self, domain: str, **options) -> str:
        """One feedback round (round_job): the latest feedback set -> teacher -> ... -> a new feedback set."""
        return self.run(domain, job=ROUND_JOB, **options)

    def promote_distilled(self, domain: str, **options) -> str:
        """Release the domain's distilled student (kd_job made and scored it) through its gate: merged,
        registered as <model>-distilled with the alias `champion` (distilled_release_job). Its gate's settings go
        as settings={"distilled_release.min_kept": 0.8}. Serve it with `nexa-serve DOMAIN --distilled` on the
        code location's machine."""
        return self.run(domain, job=DISTILLED_RELEASE_JOB, **options)

    def backfill(
        self,
        domains: Iterable[str],
        job: str = WHOLE_GRAPH,
        *,
        config: Mapping | None = None,
        settings: Mapping[str, Any] | None = None,
        epochs: int | None = None,
        student_base: str | None = None,
        teacher: Mapping | None = None,
        tags: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> str:
        """One run of `job` per domain, launched by the daemon; the backfill id."""
        domains = list(dict.fromkeys(domains))
        if not domains:
            raise NexaForgeError("a backfill needs at least one domain")
        info = self.job(job)
        for domain in domains:
            info.check_domain(domain, self.url)
        sets = self._answer(
            self._query(queries.PARTITION_SETS, repository=self.repository(), job=job)["partitionSetsOrError"],
            "PartitionSets",
            f"finding {job}'s partitions",
        )["results"]
        if not sets:
            raise NexaForgeError(f"{job} is not partitioned; run it with NexaForgeClient.run instead")
        params = {
            "selector": {"partitionSetName": sets[0]["name"], "repositorySelector": self.repository()},
            "partitionNames": domains,
            "runConfigData": self.run_config(info, config, settings, epochs, student_base, teacher),
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
            **({"title": title} if title else {}),
        }
        result = self._query(queries.LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
        if result["__typename"] == "RunConfigValidationInvalid":
            raise NexaForgeError(
                "the backfill was not launched, its run config is invalid: "
                + "; ".join(error["message"] for error in result["errors"])
            )
        if result["__typename"] == "PartitionKeysNotFoundError":
            raise UnknownDomain(f"no domain {', '.join(result['partitionKeys'])} at {self.url}")
        return self._answer(result, "LaunchBackfillSuccess", "launching the backfill")["backfillId"]

    # --- sweeps and replays ----------------------------------------------------------------------

    def sweep(
        self,
        domain: str,
        grid: Mapping[str, Iterable] | Iterable[str],
        *,
        random: int = 0,
        seed: int = 17,
        max_parallel: int = 2,
        retries: int = 1,
        settings: Mapping[str, Any] | None = None,
    ) -> str:
        """Launch a sweep (sweep_job) of `domain`: each point of `grid` ({ASSET.KEY: values} or ["ASSET.KEY=V1,V2"]),
        every combination or `random` of them, is a run of the training and evaluation assets with that point's
        settings and `settings` ({ASSET.KEY: value}, on every point); the code location's sweep_sensor launches
        them, at most `max_parallel` at once (the daemon must run). The plan's run id; wait_sweep follows it."""
        specs = (
            [f"{k}={','.join(json.dumps(v) for v in values)}" for k, values in grid.items()]
            if isinstance(grid, Mapping)
            else list(grid)
        )
        points = self.job(SWEEP_POINTS)
        points.check_domain(domain, self.url)
        try:
            wanted = {target: values[0] for target, values in grid_values(specs).items()} | dict(settings or {})
        except SettingError as exc:
            raise NexaForgeError(str(exc)) from None
        points.ops_config(wanted)  # a misspelt key is refused here, with the closest ones, before anything runs
        config = {
            "domain": domain,
            "grid": specs,
            "random": random,
            "seed": seed,
            "max_parallel": max_parallel,
            "retries": retries,
            "settings": [f"{k}={json.dumps(v)}" for k, v in (settings or {}).items()],
        }
        return self.run(None, "sweep_job", config={"ops": {"sweep_plan": {"config": config}}})

    def replay(self, domain: str, version: int) -> str:
        """Launch a replay of release `version` of `domain` (replay_job): its recorded inputs are checked, then it is
        trained and evaluated anew as one run (the daemon's sweep_sensor launches it). wait_sweep follows it."""
        config = {"domain": domain, "version": int(version)}
        return self.run(None, "replay_job", config={"ops": {"replay_plan": {"config": config}}})

    def sweep_status(self, plan_run_id: str) -> Sweep:
        plan = self.status(plan_run_id)
        sweep = plan.tags.get(SWEEP_TAG)
        points, results = {}, None
        for run in reversed(self._tagged(SWEEP_TAG, sweep) if sweep else []):  # oldest first
            tags = {t["key"]: t["value"] for t in run["tags"]}
            if run["jobName"] == "sweep_results_job":
                results = run["status"]
            elif "nexa/sweep_point" in tags:
                points.setdefault(int(tags["nexa/sweep_point"]), []).append(run["status"])
        return Sweep(plan, sweep, points, results)

    def wait_sweep(
        self,
        plan_run_id: str,
        timeout: float | None = None,
        poll: float = 5.0,
        progress: Callable[[str], None] | None = None,
    ) -> Sweep:
        """Poll a sweep (or replay) until its results are written, or its plan failed."""
        return self._wait(lambda: self.sweep_status(plan_run_id), f"sweep {plan_run_id}", timeout, poll, progress)

    def sweep_results(self, domain: str, sweep_id: str) -> dict:
        """The sweep's results as sweep_results recorded them: {"rows": one per point, "best": the best points}."""
        for found in self.materializations("sweep_results", domain, limit=50):
            if found.metadata.get("sweep_id") == sweep_id:
                return {"rows": found.metadata.get("rows", []), "best": found.metadata.get("best", "")}
        raise NexaForgeError(f"no results of sweep {sweep_id} for {domain} yet")

    def _tagged(self, key: str, value: str) -> list[dict]:
        result = self._query(queries.RUNS_TAGGED, key=key, value=value)["runsOrError"]
        return self._answer(result, "Runs", f"runs tagged {key}={value}")["results"]

    # --- progress -------------------------------------------------------------------------------

    def status(self, run_id: str) -> Run:
        result = self._answer(self._query(queries.RUN, id=run_id)["runOrError"], "Run", f"run {run_id}")
        tags = {tag["key"]: tag["value"] for tag in result["tags"]}
        plan = result.get("executionPlan") or {"steps": []}
        return Run(
            run_id,
            result["jobName"],
            result["status"],
            tags.get("dagster/partition"),
            {s["stepKey"]: s["status"] for s in result["stepStats"] if s["status"]},
            len(plan["steps"]),
            _time(result["startTime"], 1),
            _time(result["endTime"], 1),
            tags,
        )

    def backfill_status(self, backfill_id: str) -> Backfill:
        result = self._answer(
            self._query(queries.BACKFILL, id=backfill_id)["partitionBackfillOrError"],
            "PartitionBackfill",
            f"backfill {backfill_id}",
        )
        statuses = {
            p["partitionName"]: (p["runId"], p["runStatus"])
            for p in (result["partitionStatuses"] or {}).get("results", [])
        }
        runs = {domain: statuses.get(domain, (None, None)) for domain in result["partitionNames"] or statuses}
        return Backfill(backfill_id, result["status"], runs, (result["error"] or {}).get("message"))

    def wait(
        self,
        run_id: str,
        timeout: float | None = None,
        poll: float = 2.0,
        progress: Callable[[str], None] | None = None,
    ) -> Run:
        """Poll a run until it finishes; `progress` gets a line each time the steps move on."""
        return self._wait(lambda: self.status(run_id), f"run {run_id}", timeout, poll, progress)

    def wait_backfill(
        self,
        backfill_id: str,
        timeout: float | None = None,
        poll: float = 2.0,
        progress: Callable[[str], None] | None = None,
    ) -> Backfill:
        """Poll a backfill until every domain's run has finished."""
        return self._wait(lambda: self.backfill_status(backfill_id), f"backfill {backfill_id}", timeout, poll, progress)

    @staticmethod
    def _wait(read, what: str, timeout: float | None, poll: float, progress):
        deadline = None if timeout is None else time.monotonic() + timeout
        last, unreachable_since = None, None
        while True:
            try:
                state = read()
                unreachable_since = None
            except ServerUnreachable:
                # a webserver starved by the runs it launched (a busy machine) misses a poll; the runs go on
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_GRACE:
                    raise
                time.sleep(poll)
                continue
            line = state.progress()
            if progress and line != last:
                progress(line)
            last = line
            if state.finished:
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise StillRunning(f"{what} has not finished after {timeout:.0f} s ({line}); it goes on in Dagster")
            time.sleep(poll)

    # --- results --------------------------------------------------------------------------------

    @staticmethod
    def _materialization(asset: str, event: dict) -> Materialization:
        return Materialization(
            asset,
            event["partition"],
            event["runId"],
            _time(event["timestamp"]),
            {e["label"]: metadata_value(e) for e in event["metadataEntries"]},
        )

    def latest(self, asset: str) -> list[Materialization]:
        """The latest materialization of each domain of `asset` (or of an unpartitioned asset), by domain."""
        node = self._answer(
            self._query(queries.LATEST_MATERIALIZATIONS, key={"path": asset.split("/")})["assetNodeOrError"],
            "AssetNode",
            f"asset {asset}",
        )
        events = node["latestMaterializationByPartition"] if node["isPartitioned"] else node["assetMaterializations"]
        return sorted((self._materialization(asset, e) for e in events if e), key=lambda m: m.domain or "")

    def materializations(self, asset: str, domain: str | None = None, limit: int = 20) -> list[Materialization]:
        """Every materialization of `asset` (of one domain), newest first."""
        result = self._answer(
            self._query(
                queries.MATERIALIZATIONS,
                key={"path": asset.split("/")},
                partitions=[domain] if domain else None,
                limit=limit,
            )["assetOrError"],
            "Asset",
            f"asset {asset}",
        )
        return [self._materialization(asset, e) for e in result["assetMaterializations"]]

    def leaderboard(self) -> list[dict[str, str]]:
        """The leaderboard's rows as it shows them (rank, domain, round, checkpoint, metric, score ± half
        interval, base, lift, n, benchmark accuracy); none before a checkpoint is evaluated."""
        latest = self.latest("leaderboard")
        return list(latest[0].metadata.get("rows", [])) if latest else []

    def checkpoints(self) -> list[Materialization]:
        """Each domain's current student checkpoint: artifact_uri, steps, final_loss, device, round, ... in
        its metadata."""
        return self.latest("student_checkpoint")

    def releases(self) -> list[Materialization]:
        """Each domain's latest release (the model_release asset): registered_model, model_version, served_model,
        merged_uri, metric, score, ... in its metadata; none before a checkpoint is released, or while the code
        location has no release gate."""
        return self._latest_if_defined("model_release")

    def distilled_releases(self) -> list[Materialization]:
        """Each domain's latest distilled release (the distilled_release asset), its metadata as releases()'s
        (registered_model is <model>-distilled); none before a distilled student passes its gate."""
        return self._latest_if_defined(DISTILLED_RELEASE)

    def _latest_if_defined(self, asset: str) -> list[Materialization]:
        try:
            return self.latest(asset)
        except UnknownAsset:
            return []

    def logs(self, run_id: str) -> list[LogLine]:
        """Every event of a run, oldest first."""
        lines, cursor = [], None
        while True:
            page = self._answer(
                self._query(queries.LOGS, id=run_id, cursor=cursor)["logsForRun"], "EventConnection", f"run {run_id}"
            )
            lines += [
                LogLine(
                    _time(e["timestamp"]),
                    e["level"],
                    e["stepKey"],
                    e["eventType"],
                    e["message"],
                    (e.get("error") or {}).get("message"),
                )
                for e in page["events"]
                if "timestamp" in e
            ]
            if not page["hasMore"]:
                return lines
            cursor = page["cursor"]
