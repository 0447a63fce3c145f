"""The README a newcomer reads in ten minutes, and every command it and the docs/ pages show.

The README is 300 lines or less and starts with the two commands. Every command line of a ```bash block in the
README or in docs/*.md is checked without running it: its program's `--help` exits 0 (once per program, in
parallel threads); its own arguments go through the program's real parser (argparse or click), which stops
there; each `--set ASSET.KEY=VALUE` (and a sweep's `--grid`) is a setting of the job it runs, by the code
location's own check (nexa_assets.cli.ops_config); each `dagster asset materialize` selection resolves in the
graph and its `--config-json` validates against it; each variable set is one the project reads; each file named
exists; a script is executable and parses (`bash -n`). A command followed at once by comment lines that begin
`# --set` is shown being refused: the comment is the message the code gives. `--set` settings written in the
pages' prose and `settings={...}` in their Python blocks are checked too, and every relative link resolves.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
PAGES = [README, *sorted((PROJECT / "docs").glob("*.md"))]
PYTHON = PROJECT / ".venv" / "bin" / "python"
MAX_LINES = 300
SCRIPTS = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["scripts"]  # nexa-run = module:func
DAGSTER = "dagster"
# Programs the pages show that this project does not install, and where they run instead: only the files
# their commands name are checked
ELSEWHERE = {
    "vllm": "vLLM's own environment (no vLLM release accepts the transformers this project pins)",
    "docker": "a machine with a Docker engine",
    "helm": "a machine with a Kubernetes cluster",
}
SEPARATORS = {";", "&", "&&", "||", "|"}
REDIRECTS = {">", ">>", "<", "2>"}
FILE_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".md", ".toml", ".txt", ".json", ".jsonl", ".jinja"}
TOP_LEVEL = {entry.name for entry in PROJECT.iterdir()}
# Pages another change is writing, linked before they land: a link to one is checked once it exists
PLANNED = {PROJECT / "docs" / "speed.md", PROJECT / "docs" / "benchmarks.md"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Where the project reads environment variables that resources/environment.py does not hold
VARIABLE_READERS = [*PROJECT.glob("scripts/*.sh"), *PROJECT.glob("nexa_*/**/*.py"), *PROJECT.glob("resources/*.py")]


@dataclass
class Command:
    page: str
    line: int
    text: str
    program: str | None  # None: assignments only (export A=1)
    args: list[str]
    env: dict[str, str]
    refused_with: str | None = None  # the message the comment under it shows

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


@dataclass
class Block:
    page: str
    line: int
    language: str
    lines: list[tuple[int, str]] = field(default_factory=list)


def fenced_blocks(path: Path) -> list[Block]:
    blocks, current = [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)\s*$", line)
        if fence and current is None:
            current = Block(path.relative_to(PROJECT).as_posix(), number, fence.group(1))
        elif fence:
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append((number, line))
    assert current is None, f"{path}: a code block is never closed"
    return blocks


def prose(path: Path) -> str:
    """The page without its code blocks."""
    return re.sub(r"^\s*```.*?^\s*```\s*$", "", path.read_text(), flags=re.S | re.M)


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """The block's lines with backslash continuations joined."""
    joined, pending, start = [], "", 0
    for number, line in block.lines:
        start = start or number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append((start, pending + line))
        pending, start = "", 0
    return joined


def words(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    return list(lexer)


def block_commands(block: Block) -> list[Command]:
    commands: list[Command] = []
    last: list[Command] = []  # the commands of the line above, for a refusal shown under them
    for number, text in logical_lines(block):
        stripped = text.strip()
        if not stripped:
            last = []
            continue
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if last and (comment.startswith("--set ") or last[-1].refused_with is not None):
                last[-1].refused_with = " ".join(filter(None, [last[-1].refused_with, comment]))
            else:
                last = []
            continue
        last = []
        segment: list[str] = []
        tokens = words(text)
        tokens.append(";")
        skip = False
        for token in tokens:
            if skip:
                skip = False
            elif token in REDIRECTS:
                skip = True  # its target is written, not read
            elif token in SEPARATORS:
                if segment:
                    last.append(command_of(block.page, number, segment))
                segment = []
            else:
                segment.append(token)
        commands += last
    return commands


def command_of(page: str, line: int, tokens: list[str]) -> Command:
    text = " ".join(tokens)
    if tokens[0] == "export":
        tokens = tokens[1:]
        assert all(ASSIGNMENT.match(t) for t in tokens), f"{page}:{line}: export of something not VAR=VALUE: {text}"
    env = {}
    while tokens and ASSIGNMENT.match(tokens[0]):
        name, _, value = tokens.pop(0).partition("=")
        env[name] = value
    return Command(page, line, text, tokens[0] if tokens else None, tokens[1:], env)


def all_commands() -> list[Command]:
    return [
        c for page in PAGES for block in fenced_blocks(page) if block.language == "bash" for c in block_commands(block)
    ]


# --- what each program is, and its --help ---------------------------------------------------------------------


PARSE_ONLY = """
import argparse, runpy, sys
class Parsed(Exception):
    pass
def parse_then_stop(self, args=None, namespace=None, original=argparse.ArgumentParser.parse_args):
    original(self, args, namespace)
    raise Parsed
argparse.ArgumentParser.parse_args = parse_then_stop
kind, name, *argv = sys.argv[1:]
sys.argv = [name, *argv]
try:
    if kind == "module":
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(name, run_name="__main__")
except Parsed:
    sys.exit(0)
sys.exit("its entry point returned without parsing its arguments")
"""


@dataclass(frozen=True)
class Program:
    kind: str  # script (scripts/*.sh), console (a console script or dagster), file (python X.py), module, elsewhere
    name: str  # the script's path, the console script, the .py path, the module
    args: tuple[str, ...]

    def parse_argv(self) -> list[str] | None:
        """A Python program's own arguments through its parser, in a process of its own (a bench puts its folder
        on sys.path; a stage module sets up torch): PARSE_ONLY exits 0 once argparse has read them."""
        if self.kind in ("file", "module"):
            return [str(PYTHON), "-c", PARSE_ONLY, self.kind, self.name, *self.args]
        return None

    def help_argv(self) -> list[str] | None:
        if self.kind == "console":
            return [str(PROJECT / ".venv" / "bin" / self.name), "--help"]
        if self.kind == "file":
            return [str(PYTHON), self.name, "--help"]
        if self.kind == "module":
            return [str(PYTHON), "-m", self.name, "--help"]
        return None


def program_of(command: Command) -> Program:
    name, args = command.program, command.args
    if name in ("python", "python3", ".venv/bin/python"):
        if args[:1] == ["-m"] and len(args) > 1:
            return Program("module", args[1], tuple(args[2:]))
        if args and args[0].endswith(".py"):
            return Program("file", args[0], tuple(args[1:]))
        raise AssertionError(f"{command}: python without -m MODULE or a .py file")
    bare = name.removeprefix(".venv/bin/")
    if bare in SCRIPTS or bare == DAGSTER:
        return Program("console", bare, tuple(args))
    if name.startswith(("scripts/", ".ci/")):
        return Program("script", name, tuple(args))
    if name in ELSEWHERE:
        return Program("elsewhere", name, tuple(args))
    raise AssertionError(f"{command}: {name} is none of this project's programs (.venv/bin/*, scripts/*, python ...)")


def run_help(argv: list[str]) -> tuple[int, str]:
    done = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    return all_commands()


@pytest.fixture(scope="module")
def helps(commands):
    """Each program's --help, and each Python program's arguments through its parser, started at once in threads
    while the tests import the code location."""
    argvs = {}
    for command in commands:
        if command.program is None:
            continue
        with contextlib.suppress(AssertionError):  # an unknown program is reported by the test
            program = program_of(command)
            for argv in (program.help_argv(), program.parse_argv()):
                if argv is not None:
                    argvs.setdefault(tuple(argv), argv)
    pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
    futures: dict[tuple, Future] = {key: pool.submit(run_help, argv) for key, argv in argvs.items()}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def defs():
    from nexa_assets.definitions import defs

    return defs


# --- each program's own parser --------------------------------------------------------------------------------


class Parsed(Exception):
    def __init__(self, namespace):
        self.namespace = namespace


def parsed(call, argv0: str, argv: list[str]) -> argparse.Namespace:
    """Run a program's entry point until its argparse parser has read `argv`: the namespace, or the parser's
    refusal as a failure. The program itself never runs."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    stderr = io.StringIO()
    try:
        with (
            mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop),
            mock.patch.object(sys, "argv", [argv0, *argv]),
            contextlib.redirect_stderr(stderr),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            call()
    except Parsed as done:
        return done.namespace
    except SystemExit as exc:
        raise AssertionError(f"its parser refused {argv} (exit {exc.code}): {stderr.getvalue().strip()}") from None
    raise AssertionError("its entry point returned without parsing its arguments")


def console_namespace(program: Program) -> argparse.Namespace:
    module, _, function = SCRIPTS[program.name].partition(":")
    entry = getattr(importlib.import_module(module), function)
    return parsed(entry, program.name, list(program.args))


def dagster_parse(args: list[str]) -> tuple[list[str], dict]:
    """(the command path, e.g. [asset, materialize], its parameters) through Dagster's own click CLI."""
    import click
    from dagster._cli import cli

    command, context, path = cli, cli.make_context(DAGSTER, list(args)), []
    while isinstance(command, click.Group):
        name, command, rest = command.resolve_command(context, [*context._protected_args, *context.args])
        path.append(name)
        context = command.make_context(name, rest, parent=context)
    return path, context.params


# --- what the arguments mean ---------------------------------------------------------------------------------


def job_of(program: Program, ns: argparse.Namespace) -> str:
    """The job whose settings a command's --set must be."""
    if program.name in ("nexa-run", "nexa-distill"):
        return ns.job
    from nexa_forge.client import VERBS

    command = ns.command
    if command in ("run", "backfill"):
        return ns.job or ("__ASSET_JOB" if getattr(ns, "assets", None) else "nexa_job")
    if command in VERBS:
        return VERBS[command].get("job", "__ASSET_JOB")
    return {"round": "round_job", "distilled": "distilled_release_job", "sweep": "sweep_point_job"}[command]


def check_settings(defs, job: str, settings: list[str], refused_with: str | None) -> list[str]:
    from nexa_assets.cli import ops_config

    problems = []
    for item in settings:
        try:
            ops_config(defs, job, [item])
        except SystemExit as exc:
            if refused_with is None:
                problems.append(str(exc))
            elif " ".join(str(exc).split()) != " ".join(refused_with.split()):
                problems.append(f"refused with {str(exc)!r}, not as the page shows: {refused_with!r}")
        else:
            if refused_with is not None:
                problems.append(f"--set {item} is accepted by {job}, but the page shows it refused")
    return problems


def check_grid(defs, specs: list[str]) -> list[str]:
    from nexa_forge.settings import SettingError, grid_values

    try:
        grid = grid_values(specs)
    except SettingError as exc:
        return [str(exc)]
    return check_settings(
        defs, "sweep_point_job", [f"{k}={json.dumps(v)}" for k, values in grid.items() for v in values], None
    )


def check_dagster(defs, path: list[str], params: dict) -> list[str]:
    import dagster as dg

    problems = []
    modules = params.get("module_name") or ()
    for module in [modules] if isinstance(modules, str) else modules:
        if importlib.util.find_spec(module) is None:
            problems.append(f"no module {module}")
    repo = defs.get_repository_def()
    if path == ["asset", "materialize"]:
        try:
            keys = dg.AssetSelection.from_coercible(params["select"].split(",")).resolve(repo.asset_graph)
        except Exception as exc:  # the CLI's own error: an unknown asset
            return [*problems, f"--select {params['select']}: {exc}"]
        job = repo.get_implicit_job_def_for_assets(keys)
        if job is None:
            return [*problems, f"--select {params['select']}: no one job holds these assets"]
        partitioned = any(repo.asset_graph.get(key).partitions_def is not None for key in keys)
        if partitioned != bool(params["partition"]):
            problems.append(
                f"--select {params['select']}: partitioned {partitioned}, --partition {params['partition']}"
            )
        if params["config_json"]:
            try:
                dg.validate_run_config(job.get_subset(asset_selection=keys), json.loads(params["config_json"]))
            except Exception as exc:
                problems.append(f"--config-json: {' '.join(str(exc).split())[:600]}")
    elif path == ["sensor", "start"]:
        sensors = {sensor.name for sensor in defs.sensors}
        if params["sensor_name"] not in sensors:
            problems.append(f"no sensor {params['sensor_name']}; sensors: {sorted(sensors)}")
    return problems


def named_files(program: Program) -> list[str]:
    """Files of this project a command names that are not there."""
    missing = []
    for token in (program.name, *program.args) if program.kind in ("file", "script") else program.args:
        for candidate in {token, token.partition("=")[2]} - {""}:
            if candidate.startswith(("/", "-", "$", "~")) or "://" in candidate or "<" in candidate:
                continue
            first, suffix = candidate.split("/")[0], Path(candidate).suffix
            if (first in TOP_LEVEL or ("/" in candidate and suffix in FILE_SUFFIXES)) and not (
                PROJECT / candidate
            ).exists():
                missing.append(candidate)
    return missing


def check_environment(assignments: dict[str, str]) -> list[str]:
    """Every variable set is read: by resources/environment.py (setting it changes what it reads), or by name
    in the project's scripts and code; and what they say reads (JSON options, numbers, a launcher file)."""
    from resources.environment import Environment

    values = {name: value.replace("$PWD", str(PROJECT)) for name, value in assignments.items()}
    try:
        read = Environment.read(values)
    except Exception as exc:
        return [f"{sorted(values)}: resources/environment.py refuses them: {exc}"]
    sources = "\n".join(path.read_text() for path in VARIABLE_READERS)
    return [
        f"{name} is read nowhere in the project"
        for name in values
        if Environment.read({k: v for k, v in values.items() if k != name}) == read
        and not re.search(rf"\b{re.escape(name)}\b", sources)
    ]


def check_command(command: Command, program: Program, defs, helps) -> list[str]:
    problems = [f"names {path}, which is not in the project" for path in named_files(program)]
    if program.kind == "script":
        script = PROJECT / program.name
        if not script.is_file() or not os.access(script, os.X_OK):
            return [*problems, f"{program.name} is not an executable file"]
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        return problems + ([f"bash -n {program.name}: {syntax.stderr}"] if syntax.returncode else [])
    if program.kind == "elsewhere":
        return problems
    if program.kind == "file" and not (PROJECT / program.name).is_file():
        return [*problems, f"no file {program.name}"]
    if program.kind == "module" and importlib.util.find_spec(program.name) is None:
        return [*problems, f"no module {program.name}"]

    if helps is not None:
        code, output = helps[tuple(program.help_argv())].result()
        if code != 0 or "usage" not in output.lower():
            problems.append(f"{' '.join(program.help_argv()[-2:])} exited {code}: {output[-800:]}")
    if program.kind in ("file", "module"):
        argv = program.parse_argv()
        code, output = helps[tuple(argv)].result() if helps is not None else run_help(argv)
        return problems + ([f"its parser refused {list(program.args)}: {output.strip()[-800:]}"] if code else [])

    try:
        if program.name == DAGSTER:
            path, params = dagster_parse(list(program.args))
            return problems + check_dagster(defs, path, params)
        ns = console_namespace(program)
    except AssertionError as exc:
        return [*problems, str(exc)]
    except Exception as exc:  # click's usage errors
        return [*problems, f"{type(exc).__name__}: {exc}"]
    if program.kind == "console" and getattr(ns, "set", None):
        problems += check_settings(defs, job_of(program, ns), ns.set, command.refused_with)
    elif command.refused_with is not None:
        problems.append("the page shows it refused, but it sets nothing to refuse")
    if getattr(ns, "grid", None):
        problems += check_grid(defs, ns.grid)
    return problems


# --- the tests -----------------------------------------------------------------------------------------------


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; move reference to docs/ (at most {MAX_LINES})"


def test_readme_starts_with_the_two_commands():
    first = next(block for block in fenced_blocks(README) if block.language == "bash")
    assert [(c.program, c.args) for c in block_commands(first)] == [("scripts/run.sh", []), ("scripts/test.sh", [])]
    ci = [line for line in (PROJECT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "scripts/test.sh", f".ci/run must run the README's test command, not {ci[-1]!r}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_resolve():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
            if "://" in target or target.startswith("mailto:"):
                continue
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            if not linked.exists() and linked not in PLANNED:
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", prose(linked), flags=re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


def test_every_command_in_the_pages(commands, helps, defs):
    assert len(commands) > 40, "the pages' bash blocks were not read"
    problems = []
    for command in commands:
        if command.program is None:
            continue
        try:
            program = program_of(command)
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        problems += [f"{command}\n    {problem}" for problem in check_command(command, program, defs, helps)]
    for page in PAGES:  # the variables a block sets, together: an export's effect may need its neighbours
        for block in fenced_blocks(page):
            if block.language != "bash":
                continue
            assigned = {k: v for c in block_commands(block) if c.page == block.page for k, v in c.env.items()}
            problems += [f"{block.page}:{block.line}: {p}" for p in check_environment(assigned) if assigned]
    assert not problems, f"{len(problems)} commands in README.md and docs/ do not work:\n" + "\n".join(problems)


def prose_settings(page: Path) -> list[str]:
    """`--set ASSET.KEY=VALUE` written in the page's text, and the keys of `settings={...}` in its Python."""
    found = []
    for span in re.findall(r"`([^`\n]*--set [^`\n]*)`", prose(page)):
        tokens = shlex.split(span)
        found += [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "--set" and "=" in tokens[i + 1]]
    for block in fenced_blocks(page):
        if block.language == "python":
            code = "\n".join(line for _, line in block.lines)
            for settings in re.findall(r"settings=\{([^}]*)\}", code):
                found += [f"{k}={v.strip()}" for k, v in re.findall(r"\"(\w+\.[\w.]+)\":\s*([^,}]+)", settings)]
    return [item for item in found if not item.startswith("ASSET.")]


def test_settings_written_in_the_pages_are_real(defs):
    from nexa_assets.cli import ops_config

    jobs = [job.name for job in defs.resolve_all_job_defs()]
    unknown = []
    for page in PAGES:
        for item in prose_settings(page):
            accepted = False
            for job in jobs:
                with contextlib.suppress(SystemExit):
                    ops_config(defs, job, [item])
                    accepted = True
                    break
            if not accepted:
                unknown.append(f"{page.name}: {item}")
    assert not unknown, "settings no job has:\n" + "\n".join(unknown)


def test_the_checks_catch_what_breaks(defs):
    """A typo in a setting, an option, a selection, a config key, a file or a variable fails the checks."""
    for text, wanted in [
        (".venv/bin/nexa-run physics --set student_checkpoint.num_trian_epochs=1", "has no setting"),
        (".venv/bin/nexa-run physics --epoch 1", "its parser refused"),
        (".venv/bin/nexa sweep physics --grid student_checkpoint.learning_rte=1e-4,2e-4", "has no setting"),
        (
            ".venv/bin/dagster asset materialize --select teacher_logit --partition physics -m nexa_assets.definitions",
            "teacher_logit",
        ),
        (
            ".venv/bin/dagster asset materialize --select student_distilled --partition physics"
            " -m nexa_assets.definitions --config-json"
            """ '{"ops": {"student_distilled": {"config": {"overrides": {"keep_layers": 12}}}}}'""",
            "overrides",
        ),
        (".venv/bin/python bench/trian.py --smoke", "bench/trian.py"),
        (".venv/bin/python bench/train.py --shpe 0.5b", "its parser refused"),
        (".venv/bin/python -m nexa_core.train.trainr --help", "no module"),
        ("docker build -f deploy/Dockerfile.cod .", "deploy/Dockerfile.cod"),
    ]:
        (command,) = block_commands(Block("test", 1, "bash", [(1, text)]))
        problems = check_command(command, program_of(command), defs, None)  # no --help: the parse is the point
        assert any(wanted in p for p in problems), f"{text}: {problems}"
    assert check_environment({"NEXA_DELTA_RUT": "/tmp/x"}) == ["NEXA_DELTA_RUT is read nowhere in the project"]
    assert check_environment({"NEXA_TEACHER_BASE_URL": "http://x/v1", "NEXA_TEACHER_OPTIONS": "{not json"})
    with pytest.raises(AssertionError, match="none of this project's programs"):
        program_of(block_commands(Block("test", 1, "bash", [(1, "nexa-runn physics")]))[0])
