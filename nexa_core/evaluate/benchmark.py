"""Benchmark suites: a domain's own questions, run with lm-evaluation-harness on a checkpoint and its
base: `python -m nexa_core.evaluate.benchmark --checkpoint DIR --suite-dir data/eval/<domain> ...`.

A suite is one file in the domain's folder (top level only):
- `<name>.jsonl`: one JSON object per line, {"question", "answer", "choices"?, "topic"?, "id"?}.
  With `choices` (a list of at least two distinct strings) the row is multiple choice and `answer`
  names the correct choice, either as its text (a JSON string equal to one choice) or as its 0-based
  position (a JSON integer). Without `choices` the row is generative and `answer` is the short
  reference text (a JSON number is read as its text). `topic` defaults to the suite name. A file
  may mix both kinds. Any other field is refused, so a misspelt "choises" cannot silently turn a
  multiple-choice row into a generative one.
- `<name>.yaml` / `.yml`: a user's own lm-eval task file, passed to the harness as it is
  (output_type multiple_choice or generate_until; `!function` helpers beside it work).

Multiple choice is scored by log-likelihood (lm-eval's `acc`: the choice with the highest summed
log-probability as the continuation of the prompt; `acc_norm` normalises by length). Generative
answers are decoded greedily and scored on the suites' metrics of the registry (nexa_core.metric_registry:
SQuAD-normalised exact match, token F1, ...), with eval_metrics' scoring (nexa_core.evaluate.metrics). By
default every question is asked under the tokenizer's chat template with the system prompt the student was
trained with (sft.SplitConfig.system_prompt), and a choice is scored as the assistant's reply: that is the
form in which the student learned to answer. Both roles use the checkpoint's tokenizer, so they see the same tokens.

Everything is local and offline: the suites become lm-eval task YAMLs (dataset_path json, local
data files) in a temporary folder, and HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are set before the
harness is imported. One parquet file of per-item scores is written, renamed into place when
complete; when launched by Dagster a summary goes back through Pipes.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml

from nexa_core import metric_registry
from nexa_core.distill.recitation import final_answer
from nexa_core.distill.sft import SplitConfig
from nexa_core.evaluate.answer_cache import CACHED_ROLES, AnswerCache, answers_key, tokenizer_digest
from nexa_core.files import write_atomically
from nexa_core.ids import content_id
from nexa_core.models.checkpoint import model_roles, present_roles, verify_checkpoint
from nexa_core.models.device import device_name, use_bf16
from nexa_core.recipe import BenchmarkConfig
from nexa_core.schemas import BENCHMARK_ITEMS, BENCHMARK_SCORES, conform
from nexa_core.stage import BenchmarkRequest, serve
from nexa_core.train.checkpoints import eval_dir

MULTIPLE_CHOICE = "multiple_choice"
GENERATIVE = "generative"
ALL_SUITES = "__all__"  # the rollup over every suite of a domain, as ALL_TOPICS is over topics
JSONL_SUFFIXES = (".jsonl",)
YAML_SUFFIXES = (".yaml", ".yml")
ROW_FIELDS = ("question", "answer", "choices", "topic", "id")
LM_EVAL_OUTPUT_TYPES = {"multiple_choice": MULTIPLE_CHOICE, "generate_until": GENERATIVE}
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}


class SuiteError(ValueError):
    """A suite file that cannot be run: says which partition, file and row."""


@dataclass
class Suite:
    name: str
    path: Path
    items: pl.DataFrame | None = None  # validated rows of a .jsonl suite
    task: str | None = None  # lm-eval task name of a .yaml suite
    kind: str | None = None  # of a .yaml suite
    kinds: list[str] = field(default_factory=list)


# --- loading and validating suites ---------------------------------------------------------------


def _row_error(domain: str, path: Path, row: int, message: str) -> SuiteError:
    return SuiteError(f"partition {domain}: benchmark suite {path} row {row}: {message}; fix or remove the row")


def _text(value) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def validate_row(value, domain: str, path: Path, row: int, suite: str) -> dict:
    """One suite row as {row, question, choices, answer, answer_index, topic, kind}, or a SuiteError."""

    def fail(message: str) -> SuiteError:
        return _row_error(domain, path, row, message)

    if not isinstance(value, dict):
        raise fail(f"expected a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(ROW_FIELDS))
    if unknown:
        raise fail(f"unknown field(s) {unknown}; a row has {', '.join(ROW_FIELDS)}")
    question = _text(value.get("question"))
    if question is None:
        raise fail("'question' is missing or not a non-empty string")
    if "answer" not in value or value["answer"] is None:
        raise fail("'answer' is missing")
    topic = value.get("topic")
    if topic is not None and _text(topic) is None:
        raise fail("'topic' must be a non-empty string when given")
    answer = value["answer"]
    out = {"row": row, "question": question, "topic": _text(topic) or suite}
    if "choices" not in value:
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
            raise fail(f"'answer' of a generative row must be non-empty text, got {answer!r}")
        return out | {"choices": None, "answer": str(answer).strip(), "answer_index": None, "kind": GENERATIVE}
    choices = value["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise fail(f"'choices' must be a list of at least 2 choices, got {choices!r}")
    if any(_text(c) is None for c in choices):
        raise fail(f"every choice must be non-empty text, got {choices!r}")
    choices = [c.strip() for c in choices]
    if len(set(choices)) < len(choices):
        raise fail(f"'choices' repeats a choice: {choices!r}")
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(choices):
            raise fail(f"'answer' index {answer} is out of range for {len(choices)} choices (0-based)")
        index = answer
    elif isinstance(answer, str) and answer.strip() in choices:
        index = choices.index(answer.strip())
    else:
        raise fail(
            f"'answer' {answer!r} is not one of the choices {choices!r} (give the choice's text or its 0-based index)"
        )
    return out | {"choices": choices, "answer": choices[index], "answer_index": index, "kind": MULTIPLE_CHOICE}


def read_jsonl_suite(path: Path, domain: str) -> pl.DataFrame:
    rows = []
    for number, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue  # blank lines are not rows
        try:
            value = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise _row_error(domain, path, number, f"not UTF-8 text ({exc.reason})") from exc
        except json.JSONDecodeError as exc:
            raise _row_error(domain, path, number, f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
        rows.append(validate_row(value, domain, path, number, Path(path).stem))
    if not rows:
        raise SuiteError(f"partition {domain}: benchmark suite {path} has no rows; add questions or remove the file")
    return pl.DataFrame(
        rows,
        schema={
            "row": pl.Int64,
            "question": pl.String,
            "topic": pl.String,
            "choices": pl.List(pl.String),
            "answer": pl.String,
            "answer_index": pl.Int64,
            "kind": pl.String,
        },
    )


class _TaskYamlLoader(yaml.SafeLoader):
    """Reads lm-eval task YAML without running it: `!function x.y` stays a string."""


_TaskYamlLoader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")


def read_task_yaml(path: Path, domain: str, _seen: frozenset = frozenset()) -> dict:
    """A user's lm-eval task config with its `include`s merged (the file's own keys win)."""
    path = Path(path).resolve()
    where = f"partition {domain}: lm-eval task file {path}"
    if path in _seen:
        raise SuiteError(f"{where}: include cycle")
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskYamlLoader)  # noqa: S506 (a SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SuiteError(f"{where}: cannot be read as YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise SuiteError(f"{where}: expected a mapping of task settings, got {type(config).__name__}")
    if "include" in config:
        base = read_task_yaml(path.parent / str(config.pop("include")), domain, _seen | {path})
        config = {**base, **config}
    return config


def yaml_suite(path: Path, domain: str) -> Suite:
    config = read_task_yaml(path, domain)
    where = f"partition {domain}: lm-eval task file {path}"
    if "group" in config or "task" not in config:
        raise SuiteError(
            f"{where}: must define one task (`task: NAME`); groups are not supported, put each task in its own file"
        )
    if not isinstance(config["task"], str):
        raise SuiteError(f"{where}: `task` must be one name, got {config['task']!r}")
    output_type = config.get("output_type", "generate_until")  # lm-eval's default
    if output_type not in LM_EVAL_OUTPUT_TYPES:
        raise SuiteError(
            f"{where}: output_type {output_type!r} is not scored here; use {' or '.join(LM_EVAL_OUTPUT_TYPES)}"
        )
    kind = LM_EVAL_OUTPUT_TYPES[output_type]
    return Suite(name=path.stem, path=path, task=config["task"], kind=kind, kinds=[kind])


def suite_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix in JSONL_SUFFIXES + YAML_SUFFIXES
    )


def load_suites(folder: Path, domain: str) -> list[Suite]:
    """Every suite of a domain's folder, validated; [] when the folder is absent or holds none."""
    suites: dict[str, Suite] = {}
    for path in suite_files(folder):
        if path.suffix in JSONL_SUFFIXES:
            items = read_jsonl_suite(path, domain)
            suite = Suite(name=path.stem, path=path, items=items, kinds=sorted(set(items["kind"])))
        else:
            suite = yaml_suite(path, domain)
        if suite.name in suites:
            raise SuiteError(
                f"partition {domain}: benchmark suites {suites[suite.name].path.name} and {path.name} "
                f"have the same name {suite.name!r}; rename one"
            )
        suites[suite.name] = suite
    tasks = [s.task for s in suites.values() if s.task]
    if len(set(tasks)) < len(tasks):
        raise SuiteError(f"partition {domain}: two lm-eval task files in {folder} define the same task name")
    return list(suites.values())


def suites_digest(suites: list[Suite]) -> str:
    """Changes when any suite file changes: part of the output file name."""
    import hashlib

    return content_id(*[(s.path.name, hashlib.sha256(s.path.read_bytes()).hexdigest()) for s in suites])


# --- lm-eval tasks -------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def task_name(domain: str, suite: str, kind: str) -> str:
    return f"nexa_{_slug(domain)}_{_slug(suite)}_{'mc' if kind == MULTIPLE_CHOICE else 'gen'}"


def task_config(
    name: str, data_file: Path, kind: str, chat: bool, max_gen_toks: int, cache_dir: Path | None = None
) -> dict:
    """An lm-eval task over a local JSONL file, zero-shot. Under the chat template the question is
    the user turn and the answer the assistant turn (lm-eval then drops the target delimiter);
    without it, a plain "Question: ...\\nAnswer:" prompt."""
    config = {
        "task": name,
        "dataset_path": "json",
        # a dict: a bare path would become split "train"
        "dataset_kwargs": {
            "data_files": {"test": str(Path(data_file).resolve())},
            # the datasets cache of a run's copies lives and dies with the run
            **({"cache_dir": str(cache_dir)} if cache_dir else {}),
        },
        "test_split": "test",
        "num_fewshot": 0,
        "doc_to_text": "question" if chat else "Question: {{question}}\nAnswer:",
    }
    if kind == MULTIPLE_CHOICE:
        return config | {
            "output_type": "multiple_choice",
            "doc_to_choice": "choices",
            "doc_to_target": "answer_index",
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        }
    return config | {
        "output_type": "generate_until",
        "doc_to_target": "answer",
        # the tokenizer's end-of-turn token is always a stop sequence too (lm-eval adds it)
        "generation_kwargs": {
            "until": ["\n\n"] if chat else ["\n", "Question:"],
            "max_gen_toks": max_gen_toks,
            "do_sample": False,
            "temperature": 0.0,
        },
        # without remove_whitespace a leading space makes every exact match 0
        "filter_list": [{"name": "strip", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}],
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": True,
                "ignore_punctuation": True,
            }
        ],
    }


def write_tasks(
    suites: list[Suite], domain: str, work_dir: Path, chat: bool, max_gen_toks: int
) -> dict[str, tuple[Suite, str]]:
    """Task YAMLs (and their data files) for the JSONL suites in work_dir; {task name: (suite, kind)}
    for every suite, the user's own task files included."""
    tasks: dict[str, tuple[Suite, str]] = {}
    for suite in suites:
        if suite.task:
            tasks[suite.task] = (suite, suite.kind)
            continue
        for kind in suite.kinds:
            name = task_name(domain, suite.name, kind)
            if name in tasks:
                raise SuiteError(
                    f"partition {domain}: suite {suite.path.name} gives task name {name}, which another "
                    f"suite already has; rename one"
                )
            rows = suite.items.filter(pl.col("kind") == kind).drop("kind")
            data = work_dir / f"{name}.jsonl"
            data.write_text(
                "".join(
                    json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n"
                    for row in rows.iter_rows(named=True)
                ),
                encoding="utf-8",
            )
            (work_dir / f"{name}.yaml").write_text(
                yaml.safe_dump(
                    task_config(name, data, kind, chat, max_gen_toks, work_dir / "hf_datasets"), sort_keys=False
                ),
                encoding="utf-8",
            )
            tasks[name] = (suite, kind)
    return tasks


# --- running -------------------------------------------------------------------------------------


def model_args(checkpoint: str | Path, role: str, dtype: str) -> dict:
    """lm-eval HF model arguments of a role (nexa_core.models.checkpoint.model_roles); every role takes the
    checkpoint's tokenizer."""
    model, adapter = model_roles(checkpoint)[role]
    return {"pretrained": model, "tokenizer": str(checkpoint), "dtype": dtype, **({"peft": adapter} if adapter else {})}


def has_chat_template(checkpoint: str | Path) -> bool:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(checkpoint)).chat_template is not None


def run_lm_eval(
    args: dict,
    task_names: list[str],
    include_path: list[str],
    config: BenchmarkConfig,
    chat: bool,
    system_prompt: str | None,
    device: str,
) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include_path, include_defaults=False)
    missing = sorted(set(task_names) - set(manager.all_tasks))
    if missing:
        raise SuiteError(f"lm-eval did not find the task(s) {missing} in {include_path}; check the task files")
    return lm_eval.simple_evaluate(
        model="hf",
        model_args=args,
        tasks=task_names,
        task_manager=manager,
        log_samples=True,
        device=device,
        batch_size=config.batch_size,
        apply_chat_template=chat,
        system_instruction=system_prompt,
        bootstrap_iters=0,
    )  # intervals come from our own bootstrap over the per-item scores


def _first(value):
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return value


def item_rows(role: str, domain: str, tasks: dict[str, tuple[Suite, str]], samples: dict) -> list[dict]:
    """Per-item rows from lm-eval's logged samples."""
    rows = []
    for task, (suite, kind) in tasks.items():
        for sample in sorted(samples.get(task, []), key=lambda s: s["doc_id"]):
            doc = sample["doc"]
            row = int(doc["row"]) if suite.items is not None else int(sample["doc_id"]) + 1
            question = str(doc.get("question") or doc.get("query") or json.dumps(doc, default=str)[:500])
            out = {
                "model_role": role,
                "suite": suite.name,
                "source": suite.path.name,
                "row": row,
                "item_id": content_id(domain, suite.name, row, question),
                "kind": kind,
                "topic": str(doc.get("topic") or suite.name),
                "question": question,
                "lm_eval_task": task,
            }
            if kind == MULTIPLE_CHOICE:
                logprobs = [float(_first(r)) for r in sample["filtered_resps"]]
                choices = doc["choices"] if suite.items is not None else [a[1].strip() for a in sample["arguments"]]
                gold = _first(sample["target"])
                best = max(range(len(logprobs)), key=logprobs.__getitem__)
                out |= {
                    "choices": choices,
                    "reference": choices[int(gold)] if isinstance(gold, int) else str(gold),
                    "prediction": choices[best],
                    "n_choices": len(choices),
                    "choice_logprobs": logprobs,
                    # lm-eval's acc (a user's task may not ask for it: the same rule, applied here)
                    "accuracy": float(sample["acc"]) if "acc" in sample else float(best == gold),
                    "acc_norm": float(sample["acc_norm"]) if "acc_norm" in sample else None,
                }
            else:
                reply = str(_first(sample["filtered_resps"]))
                out |= {"reference": str(_first(sample["target"])), "prediction": final_answer(reply)}
            rows.append(out)
    return rows


def score_generative(items: pl.DataFrame) -> pl.DataFrame:
    """The generative rows scored on the suites' metrics that have a scorer (nexa_core.metric_registry), with
    eval_metrics' scoring (nexa_core.evaluate.metrics)."""
    from nexa_core.evaluate.metrics import score_items

    generative = items.filter(pl.col("kind") == GENERATIVE)
    if generative.is_empty():
        return items
    scored = score_items(generative, metric_registry.SUITES)
    return pl.concat([items.filter(pl.col("kind") != GENERATIVE), scored.select(items.columns)])


# settings that change no item's answer: left out of the answer cache's key
SCORE_NEUTRAL = ("roles", "confidence", "n_resamples")


def cache_key(
    checkpoint, role: str, suites: list[Suite], domain: str, config: BenchmarkConfig, asked: dict
) -> str | None:
    """The answer cache's key of a role's items on these suites; None where they cannot be kept: a model that is not a
    local folder, or a user's lm-eval task file (it may run code beside it that the key cannot see)."""
    if any(s.items is None for s in suites):
        return None
    items = content_id(
        domain, suites_digest(suites), asked["chat"], asked["system_prompt"], tokenizer_digest(checkpoint)
    )
    settings = {k: v for k, v in config.to_dict().items() if k not in SCORE_NEUTRAL}
    settings["lm_eval"] = importlib.metadata.version("lm_eval")  # how the items were asked and scored
    return answers_key(config.stage, model_roles(checkpoint)[role], items, settings, asked["dtype"])


def run_benchmark(
    checkpoint: str | Path,
    suites: list[Suite],
    domain: str,
    config: BenchmarkConfig,
    log=print,
    cache: AnswerCache | None = None,
) -> tuple[pl.DataFrame, dict]:
    """(per-item scores of every role, summary). The suites must come from load_suites. With an answer cache, the
    read and base roles' items are read back where the same model answered the same suites the same way before, and
    kept otherwise."""
    import torch

    for key, value in OFFLINE.items():  # before datasets/transformers/lm_eval are imported, nothing downloads
        os.environ[key] = value
    if not suites:
        raise SuiteError(f"partition {domain}: no benchmark suites to run")
    chat = config.chat_template and has_chat_template(checkpoint)
    if config.chat_template and not chat:
        log(f"partition {domain}: the checkpoint's tokenizer has no chat template; asking with plain prompts")
    prompt = SplitConfig.system_prompt if config.system_prompt is None else config.system_prompt  # None: SFT's own
    system_prompt = prompt.format(domain=domain) if chat and prompt else None
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = "bfloat16" if use_bf16(config.bf16) else "float32"
    roles = present_roles(checkpoint, config.roles, domain, log)
    rows, seconds, cached = [], {}, []
    asked = {"chat": chat, "system_prompt": system_prompt, "dtype": dtype}
    with tempfile.TemporaryDirectory(prefix="nexa-benchmark-") as work:
        tasks = write_tasks(suites, domain, Path(work), chat, config.max_gen_toks)
        include = [work, *sorted({str(s.path.parent) for s in suites if s.task})]
        for role in roles:
            start = time.perf_counter()
            key = cache_key(checkpoint, role, suites, domain, config, asked) if cache and role in CACHED_ROLES else None
            kept = cache.read(key, sum(s.items.height for s in suites)) if key else None
            if kept is not None:
                role_rows = kept.with_columns(model_role=pl.lit(role)).to_dicts()
                cached.append(role)
            else:
                results = run_lm_eval(
                    model_args(checkpoint, role, dtype), list(tasks), include, config, chat, system_prompt, device
                )
                role_rows = item_rows(role, domain, tasks, results["samples"])
                if key:
                    cache.write(key, pl.DataFrame(role_rows, schema=BENCHMARK_ITEMS))
            seconds[role] = round(time.perf_counter() - start, 3)
            how = f"read back from the answer cache ({key})" if kept is not None else "answered"
            log(f"partition {domain}: {role} {how} {len(role_rows)} benchmark items in {seconds[role]:.1f}s")
            rows += role_rows
    items = score_generative(pl.DataFrame(rows, schema=BENCHMARK_ITEMS)).sort("model_role", "suite", "kind", "row")
    expected = sum(s.items.height for s in suites if s.items is not None)
    for role in roles:
        got = items.filter(
            (pl.col("model_role") == role)
            & pl.col("lm_eval_task").is_in([t for t, (s, _) in tasks.items() if s.items is not None])
        ).height
        if got != expected:
            raise RuntimeError(f"partition {domain}: lm-eval scored {got} of the {expected} suite rows for {role}")
    import lm_eval

    summary = {
        "roles": roles,
        "cached_roles": cached,
        "seconds": seconds,
        "chat_template": chat,
        "system_prompt": system_prompt,
        "device": device_name(),
        "dtype": dtype,
        "lm_eval_version": lm_eval.__version__,
        "suites": {
            s.name: {
                "file": s.path.name,
                "kinds": s.kinds,
                "items": int(items.filter((pl.col("suite") == s.name) & (pl.col("model_role") == roles[0])).height),
            }
            for s in suites
        },
    }
    return items, summary


# --- aggregates ----------------------------------------------------------------------------------


def summarize(scores: pl.DataFrame, by: list[str], confidence: float = 0.95, n_resamples: int = 2000) -> pl.DataFrame:
    """Mean and bootstrap interval of each metric per suite and topic, and over all suites and all
    topics ("__all__"), with the chance level of multiple-choice accuracy (mean of 1/n_choices).
    Metrics a group has no value of (accuracy of a generative suite) are left out."""
    from nexa_core.evaluate.metrics import ALL_TOPICS, aggregate  # scipy: paid only when scoring

    metrics = metric_registry.of(metric_registry.SUITES)
    multiple_choice = [m.name for m in metrics if m.multiple_choice]
    both = pl.concat([scores, scores.with_columns(suite=pl.lit(ALL_SUITES))])
    summary = aggregate(
        both, [m.name for m in metrics], by=[*by, "suite"], confidence=confidence, n_resamples=n_resamples
    )
    chance_items = both.filter(pl.col("kind") == MULTIPLE_CHOICE).select(
        *by, "suite", "topic", (1 / pl.col("n_choices")).alias("chance")
    )
    chance = (
        pl.concat([chance_items, chance_items.with_columns(topic=pl.lit(ALL_TOPICS))])
        .group_by([*by, "suite", "topic"])
        .agg(pl.col("chance").mean())
    )
    return (
        summary.filter(pl.col("n") > 0)
        .join(chance, on=[*by, "suite", "topic"], how="left")
        .with_columns(chance=pl.when(pl.col("metric").is_in(multiple_choice)).then(pl.col("chance")))
        .sort([*by, "suite", "topic", "metric"])
    )


# --- entry point ---------------------------------------------------------------------------------


def suite_request(
    domain: str,
    suite_dir: Path,
    suites: list[Suite],
    settings: BenchmarkConfig,
    *,
    model_id: str,
    model_uri: str,
    files_sha256: str,
    answer_cache: str | None = None,
) -> BenchmarkRequest:
    """The launched run of a model folder on the domain's suites; its output file is keyed by the model, the
    settings and the suites' contents, beside the model's other scores."""
    run_id = content_id(model_id, settings.to_dict(), suites_digest(suites))
    return BenchmarkRequest(
        domain=domain,
        checkpoint=model_uri,
        suite_dir=str(suite_dir),
        output=f"{eval_dir(model_uri)}/benchmark-{run_id}.parquet",
        expect_sha256=files_sha256,
        overrides=settings.changes(),
        answer_cache=answer_cache,
    )


def scored_items(output: str, run: dict, settings: BenchmarkConfig, **columns) -> tuple[pl.DataFrame, dict]:
    """(the run's per-item scores as benchmark_scores rows with `columns` filled in, the settings as recorded
    with how the runner ran)."""
    recorded = {
        **settings.to_dict(),
        "chat_template_applied": run["chat_template"],
        "system_prompt_applied": run["system_prompt"],
        **{k: run[k] for k in ("lm_eval_version", "device", "dtype")},
    }
    items = pl.read_parquet(output).with_columns(
        **{k: pl.lit(v) for k, v in columns.items()}, benchmark_config=pl.lit(json.dumps(recorded))
    )
    return conform(items, BENCHMARK_SCORES), recorded


def main(argv: list[str] | None = None) -> int:
    args = BenchmarkRequest.parse(argv, __doc__.splitlines()[0])
    os.environ.update(OFFLINE)  # before the runtime imports transformers
    return serve(args, lambda log: score_suites(args, args.recipe(), log))


def score_suites(args: BenchmarkRequest, config: BenchmarkConfig, log) -> dict:
    """Every model role on the domain's suites, per item in one parquet file; returns the run's summary."""
    if args.expect_sha256:
        verify_checkpoint(args.checkpoint, json.loads(args.expect_sha256))
    suites = load_suites(Path(args.suite_dir), args.domain)
    cache = AnswerCache(args.answer_cache) if args.answer_cache else None
    items, summary = run_benchmark(args.checkpoint, suites, args.domain, config, log=log, cache=cache)
    write_atomically(Path(args.output), items.write_parquet)
    summary |= {"output": args.output, "rows": items.height, "config": config.to_dict()}
    return summary


if __name__ == "__main__":
    sys.exit(main())
