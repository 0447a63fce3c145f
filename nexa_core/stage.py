"""The launched stages' one runtime. Each stage (reading, SFT, answers, benchmark suites) has a typed request:
the asset builds it, the request makes the argv, and the stage parses that argv back into the same request,
so the two sides share one set of names. Here too: --set overrides, the Pipes-or-stderr log, the error file a
launcher reads when all it sees is an exit code, and quiet libraries."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, get_type_hints

import yaml

from nexa_core.recipe import (
    BenchmarkConfig,
    DistillConfig,
    FinetuneConfig,
    GenerateConfig,
    MergeConfig,
    ReadingConfig,
    TeacherLogitsConfig,
)
from nexa_core.roles import CHECKPOINT_ROLES, ROLES
from nexa_core.settings import StageSettings

ERROR_FILE = "error.txt"  # the reason a run failed, for a launcher that only sees an exit code
STAGE_LOG = "stage.log"  # a launched stage's own stdout and stderr (libraries' output, tracebacks)


def parse_sets(items: list[str]) -> dict:
    """--set KEY=YAML arguments as overrides."""
    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in items)}


def set_arguments(overrides: dict) -> list[str]:
    """Overrides as the --set KEY=VALUE arguments parse_sets reads back (JSON values are YAML)."""
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


@dataclass(kw_only=True)
class StageRequest:
    """A field is a flag (`sft_version` is --sft-version); `overrides` are the --set KEY=YAML pairs over the
    stage's YAML settings (`settings`: their typed record); a list is comma-joined."""

    module: ClassVar[str]  # python -m <module>
    process: ClassVar[str]  # what the launcher calls it in errors
    result: ClassVar[str]  # the Pipes metadata key of its result
    settings: ClassVar[type[StageSettings]]  # its typed settings (nexa_core/recipe.py)
    distributed: ClassVar[bool] = False  # under torchrun when the launcher has several GPUs

    domain: str
    overrides: dict = field(default_factory=dict)

    @property
    def out_dir(self) -> str:
        return str(Path(self.output).parent)

    def recipe(self) -> StageSettings:
        """The typed settings this request runs with: the YAML (--config, else the stage's own) and the overrides,
        strictly (a misspelt key is a SettingsError naming it)."""
        return self.settings.load(getattr(self, "config", None), self.overrides)

    def argv(self) -> list[str]:
        args = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "overrides":
                args += set_arguments(value)
            elif value is not None:
                text = ",".join(value) if isinstance(value, (list, tuple)) else str(value)
                args += ["--" + f.name.replace("_", "-"), text]
        return args

    @classmethod
    def parse(cls, argv: list[str] | None, description: str):
        parser = argparse.ArgumentParser(description=description)
        hints = get_type_hints(cls)
        for f in fields(cls):
            if f.name == "overrides":
                parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=YAML")
                continue
            kind = hints[f.name]
            convert = int if kind in (int, int | None) else (lambda s: s.split(",")) if "list" in str(kind) else str
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                type=convert,
                required=default is MISSING,
                default=None if default is MISSING else default,
                help=f.metadata.get("help"),
            )
        values = vars(parser.parse_args(argv))
        values["overrides"] = parse_sets(values["overrides"])
        try:
            request = cls(**values)
            request.recipe()  # a misspelt or mistyped setting stops the stage here, named
            return request
        except ValueError as exc:
            parser.error(str(exc))


@dataclass(kw_only=True)
class TrainingRequest(StageRequest):
    """Reading and SFT: a model folder under output_dir, a YAML config with --set overrides."""

    result: ClassVar[str] = "record"
    distributed: ClassVar[bool] = True

    output_dir: str
    bases_dir: str | None = field(default=None, metadata={"help": "named bases, converted once (default ../../bases)"})
    config: str | None = field(default=None, metadata={"help": "a YAML config (default: the stage's own)"})

    @property
    def out_dir(self) -> str:
        return self.output_dir


@dataclass(kw_only=True)
class Restated:
    """The teacher's restatements of the corpus (the restatements table at a pinned version), where a stage reads
    them (restatement_passes)."""

    restatements_uri: str | None = field(default=None, metadata={"help": "the restatements Delta table"})
    restatements_version: int | None = None


@dataclass(kw_only=True)
class ReadRequest(TrainingRequest, Restated):
    module: ClassVar[str] = "nexa_core.train.pretrain"
    process: ClassVar[str] = "reader"
    settings: ClassVar[type[StageSettings]] = ReadingConfig

    documents_uri: str = field(metadata={"help": "the raw_documents Delta table"})
    documents_version: int


@dataclass(kw_only=True)
class TrainingData:
    """What a student learns from: the SFT set at a pinned version and, where given, the documents its base read
    (lineage: through student_base)."""

    sft_uri: str
    sft_version: int
    documents_uri: str | None = field(default=None, metadata={"help": "raw_documents, the corpus the base read"})
    documents_version: int | None = None


@dataclass(kw_only=True)
class SFTRequest(TrainingRequest, TrainingData, Restated):
    """SFT; the documents are replayed beside the QA pairs where the config says so (replay_documents)."""

    module: ClassVar[str] = "nexa_core.train.trainer"
    process: ClassVar[str] = "trainer"
    settings: ClassVar[type[StageSettings]] = FinetuneConfig


@dataclass(kw_only=True)
class ScoringRequest(StageRequest):
    """Answers and benchmark suites: a checkpoint verified against its recorded sha256s, one output file."""

    output: str = field(metadata={"help": "the parquet file of per-item results"})
    expect_sha256: str | None = field(default=None, metadata={"help": "JSON {relative path: sha256} to verify"})
    answer_cache: str | None = field(
        default=None, metadata={"help": "folder of kept answers of unchanged models (read, base); none: no cache"}
    )


@dataclass(kw_only=True)
class GenerateRequest(ScoringRequest):
    module: ClassVar[str] = "nexa_core.evaluate.generate"
    process: ClassVar[str] = "generator"
    result: ClassVar[str] = "predictions"
    settings: ClassVar[type[StageSettings]] = GenerateConfig

    adapter: str = field(metadata={"help": "the checkpoint's folder"})
    sft_uri: str
    sft_version: int
    split: str = "test"
    roles: list[str] = field(default_factory=lambda: list(CHECKPOINT_ROLES))

    def __post_init__(self):
        if self.split not in ("train", "validation", "test"):
            raise ValueError(f"--split {self.split}: expected train, validation or test")
        if set(self.roles) - set(ROLES):
            raise ValueError(f"--roles {','.join(self.roles)}: each must be one of {','.join(ROLES)}")


@dataclass(kw_only=True)
class BenchmarkRequest(ScoringRequest):
    module: ClassVar[str] = "nexa_core.evaluate.benchmark"
    process: ClassVar[str] = "benchmark runner"
    result: ClassVar[str] = "benchmark"
    settings: ClassVar[type[StageSettings]] = BenchmarkConfig

    checkpoint: str = field(metadata={"help": "the checkpoint folder (PEFT adapter or full model)"})
    suite_dir: str = field(metadata={"help": "the domain's suite folder, e.g. data/eval/physics"})


@dataclass(kw_only=True)
class TeacherLogitsRequest(ScoringRequest, TrainingData):
    """The teacher's top-k log-probabilities on the SFT set's train split and the documents it read."""

    module: ClassVar[str] = "nexa_core.train.teacher_logits"
    process: ClassVar[str] = "teacher"
    result: ClassVar[str] = "logits"
    settings: ClassVar[type[StageSettings]] = TeacherLogitsConfig

    teacher: str = field(metadata={"help": "the teacher checkpoint's folder"})


@dataclass(kw_only=True)
class DistillRequest(TrainingRequest):
    """A pruned copy of the teacher trained on its cached top-k."""

    module: ClassVar[str] = "nexa_core.train.kd"
    process: ClassVar[str] = "distiller"
    settings: ClassVar[type[StageSettings]] = DistillConfig
    distributed: ClassVar[bool] = False

    teacher: str = field(metadata={"help": "the teacher checkpoint's folder"})
    logits_uri: str = field(metadata={"help": "the teacher_logits Delta table"})
    logits_version: int
    logits_id: str = field(metadata={"help": "which teacher, data version and k (teacher_logits.logits_id)"})


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process: torchrun's RANK and WORLD_SIZE, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def quiet_libraries() -> None:
    """A launched stage reports through its own log lines and metrics: no progress bars, and no library
    deprecation notices a user of the stage cannot act on (they name TRL's and transformers' own arguments)."""
    import warnings

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft|accelerate|torch)\b")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def run_reporting_errors(run, error_file: Path) -> int:
    """Run; on failure leave the reason in error_file for a launcher that only sees an exit code."""
    error_file.unlink(missing_ok=True)
    try:
        return run()
    except Exception as exc:
        error_file.parent.mkdir(parents=True, exist_ok=True)
        error_file.write_text(f"{type(exc).__name__}: {exc}")
        raise


def pipes_or_stderr(stack: ExitStack, out_dir: Path):
    """(Dagster Pipes context or None, log function): Pipes when launched by Dagster, else stderr.
    Launched, the process's stdout and stderr go to out_dir/stage.log, whose path is logged: the run log
    and the terminal get the stage's own lines, not every library's progress bars."""
    rank, _ = process_rank()
    if rank > 0:  # under torchrun only rank 0 reports: one record, one materialization
        return None, lambda message: print(f"[rank {rank}] {message}", file=sys.stderr)
    if not os.environ.get("DAGSTER_PIPES_CONTEXT"):
        return None, lambda message: print(message, file=sys.stderr)
    from dagster_pipes import open_dagster_pipes

    pipes = stack.enter_context(open_dagster_pipes())
    log_file = Path(out_dir) / STAGE_LOG
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with log_file.open("ab") as fh:  # fds 1 and 2 now point at the file; this handle can close
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
    pipes.log.info(f"output of this process: {log_file}")
    return pipes, pipes.log.info


def serve(request: StageRequest, work, after=None) -> int:
    """A stage's body under the runtime: quiet libraries; a log through Pipes (or stderr); `work(log)`'s result
    reported through Pipes (or printed as JSON), then `after(pipes, result)` (its checks), by rank 0 only; a
    failure's reason left in the error file."""
    quiet_libraries()

    def run() -> int:
        with ExitStack() as stack:
            pipes, log = pipes_or_stderr(stack, Path(request.out_dir))
            result = work(log)
            if process_rank()[0] > 0:
                return 0
            if pipes:
                metadata = {request.result: {"raw_value": json.dumps(result), "type": "json"}}
                pipes.report_asset_materialization(metadata=metadata)
                if after:
                    after(pipes, result)
            else:
                print(json.dumps(result))
        return 0

    return run_reporting_errors(run, Path(request.out_dir) / ERROR_FILE)


@dataclass(kw_only=True)
class MergeRequest(StageRequest):
    """A release's full weights: a LoRA adapter merged into its base (a full fine-tune copied), with its tokenizer,
    in <output_dir>.partial for the release to commit; registered in MLflow when registered_model is given."""

    module: ClassVar[str] = "nexa_core.release.merge"
    process: ClassVar[str] = "merger"
    result: ClassVar[str] = "merged"
    settings: ClassVar[type[StageSettings]] = MergeConfig

    checkpoint: str = field(metadata={"help": "the checkpoint's folder"})
    output_dir: str = field(metadata={"help": "the release's model folder"})
    # where given, the merged release is also registered as a new version of this MLflow model, from here
    registered_model: str | None = None
    tracking_uri: str | None = None
    experiment_id: str | None = None
    checkpoint_id: str | None = None
    dagster_run_id: str | None = None

    def registry_tags(self) -> dict[str, str]:
        tags = {"domain": self.domain, "checkpoint_id": self.checkpoint_id, "dagster_run_id": self.dagster_run_id}
        return {k: v for k, v in tags.items() if v}

    @property
    def out_dir(self) -> str:
        return str(Path(self.output_dir).parent)
