"""Releasing a domain's student: the promotion gate, merged weights, the model card, and the SFT rows
a release was trained on. Plain code over polars frames and files; the model_release asset
(nexa_assets/release.py) reads the tables, calls these, and registers the model.

The gate compares the candidate (the domain's newest evaluated checkpoint) with its base and with the
current champion on one metric: accuracy over all of the domain's benchmark suites when the checkpoint
was benchmarked, else the test split's primary metric (the judge's score, else token F1). By default a
candidate wins only when its 95% interval lies wholly above the other's.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from nexa_core.artifacts import commit_folder, sha256_files, staging_for
from nexa_core.delta import DeltaRoot
from nexa_core.evaluate.leaderboard import (
    ALL_SUITES,
    ALL_TOPICS,
    PRIMARY_METRICS,
    interval_text,
    latest_benchmarks,
    latest_evaluations,
)
from nexa_core.ids import content_id
from nexa_core.tables import RELEASE_HISTORY, SFT_DATASET

BENCHMARK_ACCURACY = "benchmark_accuracy"  # the gate's name for accuracy over all suites (benchmark_history)
BENCHMARK_ACC_NORM = "benchmark_acc_norm"  # the same, each choice's log-likelihood normalised by its length
# benchmark_history's metric behind each gate name
BENCHMARK_METRIC = {BENCHMARK_ACC_NORM: "acc_norm", BENCHMARK_ACCURACY: "accuracy"}
RULES = ("intervals", "mean")
DISTILLED_LINE = "distilled"  # a domain's distilled students are released as <registered model>-distilled
CARD = "README.md"  # the model card beside the merged weights, where the Hugging Face hub looks for one


class ReleaseError(ValueError):
    pass


@dataclass(frozen=True)
class GateRule:
    """`metric`: auto, benchmark_acc_norm, benchmark_accuracy, or a test split metric (judge_score, token_f1,
    rouge_l, exact_match, contains). `rule`: intervals (the candidate's ci_low minus the other's ci_high) or mean (the
    difference of means); the candidate must exceed each `min_lift_*` by that measure."""

    metric: str = "auto"
    rule: str = "intervals"
    min_lift_over_base: float = 0.0

    def __post_init__(self):
        if self.rule not in RULES:
            raise ReleaseError(f"gate rule {self.rule!r}: expected one of {list(RULES)}")


@dataclass(frozen=True)
class GateConfig(GateRule):
    """The champion's gate: GateRule, and a lift over the current champion."""

    min_lift_over_champion: float = 0.0


@dataclass(frozen=True)
class Score:
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}] (n={self.n})"


# --- the candidate and its scores -------------------------------------------------------------------


def newest_evaluated(history: pl.DataFrame, domain: str) -> str | None:
    """The checkpoint of the domain whose student evaluation is the most recent."""
    rows = history.filter((pl.col("domain") == domain) & (pl.col("model_role") == "student"))
    return rows.sort("created_at")["checkpoint_id"][-1] if rows.height else None


def benchmarked(benchmarks: pl.DataFrame | None, checkpoint_id: str) -> bool:
    return benchmarks is not None and benchmarks.filter(pl.col("checkpoint_id") == checkpoint_id).height > 0


def gate_metric(config: GateConfig, checkpoint_id: str, history: pl.DataFrame, benchmarks: pl.DataFrame | None) -> str:
    """The metric this candidate is judged on (config.metric resolved when it is auto)."""
    # auto: the benchmark suites' accuracy, else the judge's score when anything was judged, else token F1
    for metric in [config.metric] if config.metric != "auto" else [BENCHMARK_ACCURACY, *PRIMARY_METRICS]:
        if score_of(checkpoint_id, "student", metric, history, benchmarks):
            return metric
    scored = sorted(set(history.filter(pl.col("checkpoint_id") == checkpoint_id)["metric"]))
    raise ReleaseError(
        f"checkpoint {checkpoint_id} has no score on the gate's metric {config.metric!r}; its test "
        f"split has {scored or 'no scores'}, benchmark suites give {' and '.join(BENCHMARK_METRIC)}"
    )


def score_of(
    checkpoint_id: str, role: str, metric: str, history: pl.DataFrame, benchmarks: pl.DataFrame | None
) -> Score | None:
    """A role's latest score on the whole domain; base rows carry the checkpoint_id of their student."""
    if metric in BENCHMARK_METRIC:
        if benchmarks is None or benchmarks.is_empty():
            return None
        rows = latest_benchmarks(benchmarks).filter(
            (pl.col("suite") == ALL_SUITES) & (pl.col("metric") == BENCHMARK_METRIC[metric])
        )
    else:
        rows = latest_evaluations(history).filter(pl.col("metric") == metric)
    rows = rows.filter(
        (pl.col("checkpoint_id") == checkpoint_id)
        & (pl.col("model_role") == role)
        & (pl.col("topic") == ALL_TOPICS)
        & (pl.col("n") > 0)
        & pl.col("mean").is_not_null()
    )
    if rows.is_empty():
        return None
    r = rows.row(0, named=True)
    return Score(metric, r["mean"], r["ci_low"], r["ci_high"], r["n"])


# --- the gate ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    metric: str
    rule: str
    candidate: Score
    base: Score | None
    champion: Score | None
    champion_version: int | None
    lifts: dict[str, float]  # measured by the rule, against base and champion
    reasons: list[str]

    def description(self) -> str:
        verdict = "promoted" if self.passed else "refused; the champion stays as it was"
        return f"{verdict}: " + "; ".join(self.reasons)

    def metadata(self) -> dict:
        """The numbers, flat, for the check's metadata."""
        out: dict = {"metric": self.metric, "rule": self.rule}
        for name, score in (("candidate", self.candidate), ("base", self.base), ("champion", self.champion)):
            if score:
                out |= {
                    f"{name}/mean": score.mean,
                    f"{name}/ci_low": score.ci_low,
                    f"{name}/ci_high": score.ci_high,
                    f"{name}/n": score.n,
                }
        if self.champion_version is not None:
            out["champion_version"] = self.champion_version
        return out | {f"lift_over_{name}": value for name, value in self.lifts.items()}


def _lift(candidate: Score, other: Score, rule: str) -> float:
    return candidate.ci_low - other.ci_high if rule == "intervals" else candidate.mean - other.mean


def compare(name: str, candidate: Score, other: Score, rule: str, margin: float) -> tuple[bool, float, str]:
    lift = _lift(candidate, other, rule)
    measure = "its ci_low minus the other's ci_high" if rule == "intervals" else "the difference of means"
    beats = lift > margin
    return (
        beats,
        lift,
        (
            f"candidate {candidate} {'beats' if beats else 'does not beat'} {name} {other}: "
            f"{measure} is {lift:+.4f}, {'above' if beats else 'not above'} the threshold {margin:+.4f}"
        ),
    )


@dataclass
class Tally:
    """A gate's decision as it is reached: each comparison's lift and reason, and whether all of them were won."""

    candidate: Score
    rule: str
    reasons: list[str]
    lifts: dict[str, float] = field(default_factory=dict)
    passed: bool = True

    def weigh(self, key: str, name: str, other: Score | None, margin: float, missing: str) -> None:
        """The candidate against `other` by the rule (its lift under `key`); lost, for `missing`, without a score."""
        if other is None:
            self.require(False, missing)
            return
        beats, self.lifts[key], reason = compare(name, self.candidate, other, self.rule, margin)
        self.require(beats, reason)

    def require(self, ok: bool, reason: str) -> None:
        self.passed &= ok
        self.reasons.append(reason)


def promotion_gate(
    config: GateConfig, candidate: Score, base: Score | None, champion: Score | None, champion_version: int | None
) -> GateDecision:
    """Beat the base, and the champion when there is one, on the gate's metric by its rule."""
    tally = Tally(candidate, config.rule, [f"metric {candidate.metric}, rule {config.rule}"])
    tally.weigh(
        "base",
        "its base",
        base,
        config.min_lift_over_base,
        f"the base has no {candidate.metric} score beside this checkpoint; evaluate it with the base",
    )
    if champion_version is not None:
        tally.weigh(
            "champion",
            f"champion v{champion_version}",
            champion,
            config.min_lift_over_champion,
            f"champion v{champion_version} has no {candidate.metric} score to compare with; "
            f"evaluate it on that metric or set the gate's metric to one it has",
        )
    else:
        tally.reasons.append("no champion yet")
    return GateDecision(
        tally.passed,
        candidate.metric,
        config.rule,
        candidate,
        base,
        champion,
        champion_version,
        tally.lifts,
        tally.reasons,
    )


# --- merged weights ----------------------------------------------------------------------------------


def merge_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path) -> dict:
    """Full weights of the checkpoint in `out_dir` + ".partial": a LoRA adapter merged into its base (a
    full fine-tune is copied as it is), its tokenizer and chat template beside. Returns what was merged
    and the sha256 of every file; commit_release renames the folder into place."""
    from peft import PeftModel

    from nexa_core.train.student import load_student, resolve_checkpoint

    model_path, adapter, base_path = resolve_checkpoint(checkpoint_dir)
    staging = staging_for(Path(out_dir))
    model, _ = load_student(model_path, dtype="auto")  # in the precision it was saved in (bf16 when trained in it)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer = checkpoint_tokenizer(checkpoint_dir)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return {
        "merged_from": str(adapter or model_path),
        "adapter": adapter,
        "base_model_path": base_path,
        "staging": str(staging),
        "files": sha256_files(staging),
    }


def checkpoint_tokenizer(checkpoint_dir: str | Path):
    """The checkpoint folder's tokenizer (the one it was trained and evaluated with), its chat template
    filled in as load_student does, so the merged folder serves the same prompts."""
    from transformers import AutoTokenizer

    from nexa_core.train.student import CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def release_summary(domain: str, merged: dict) -> dict:
    """What the merge stage made and registered, as the card and the release row name it."""
    name, version = merged["registered_model"], merged["model_version"]
    return {
        "domain": domain,
        "registered_model": name,
        "model_version": version,
        "served_model": f"{name}-v{version}",
        "merged_uri": merged["merged_uri"],
        "weights_sha256": merged["files"],
        "released_at": datetime.now(timezone.utc),
    }


def commit_release(merged: dict, out_dir: str | Path, card: str, record: dict) -> dict[str, str]:
    """Write the model card and the manifest (record, and what was merged and registered) into the staging
    folder and rename it into place (the rename is the commit); returns the sha256 of every file, the card
    included."""
    staging = Path(merged["staging"])
    (staging / CARD).write_text(card, encoding="utf-8")
    made = ("merged_from", "base_model_path", "registered_model", "model_version")
    return commit_folder(staging, Path(out_dir), record | {k: merged[k] for k in made if k in merged})


def release_costs(tables: DeltaRoot, domain: str, lineage: list[dict], base: dict, checkpoint: dict) -> dict:
    """What the release cost: the teacher's answers it was distilled from, and the reading and SFT compute."""
    teacher_version = lineage_version(lineage, "teacher_outputs")
    return {
        "teacher_usd": teacher_cost(tables, domain, teacher_version),
        "teacher_outputs_version": teacher_version,
        "gpu_hours": ((base.get("gpu_seconds") or 0.0) + checkpoint["gpu_seconds"]) / 3600,
        "wall_hours": ((base.get("wall_seconds") or 0.0) + checkpoint["wall_seconds"]) / 3600,
    }


def checkpoint_rubrics(scores: pl.DataFrame | None, checkpoint_id: str) -> list[dict]:
    """The judge rubrics (name, sha256) the checkpoint's answers were scored with."""
    if scores is None:
        return []
    judged = scores.filter((pl.col("checkpoint_id") == checkpoint_id) & pl.col("rubric_sha256").is_not_null())
    return judged.select("rubric", "rubric_sha256").unique().sort("rubric").to_dicts()


def release_row(
    summary: dict,
    checkpoint: dict,
    decision: GateDecision,
    files: dict[str, str],
    lineage: list[dict],
    costs: dict,
    code: str,
    card: str,
    run_id: str,
) -> dict:
    """The release_history row (schemas.MODEL_RELEASE) of a committed release."""
    domain, name, version = summary["domain"], summary["registered_model"], summary["model_version"]
    return {
        **{k: summary[k] for k in ("domain", "registered_model", "model_version", "served_model", "merged_uri")},
        "released_at": summary["released_at"],
        "release_id": content_id(domain, name, version, checkpoint["checkpoint_id"]),
        "checkpoint_id": checkpoint["checkpoint_id"],
        **{k: checkpoint[k] for k in ("round", "sft_version", "base_id", "base_model", "finetune")},
        "files_sha256": json.dumps(files, sort_keys=True),
        "metric": decision.metric,
        "score": decision.candidate.mean,
        "ci_low": decision.candidate.ci_low,
        "ci_high": decision.candidate.ci_high,
        "base_score": decision.base.mean,
        "previous_champion": decision.champion_version,
        "gate": json.dumps({**decision.metadata(), "reasons": decision.reasons}),
        "lineage": json.dumps(lineage, default=str),
        "teacher_usd": costs["teacher_usd"],
        "gpu_hours": costs["gpu_hours"],
        "code_version": code,
        "model_card": card,
        "mlflow_run_id": run_id,
    }


# --- provenance --------------------------------------------------------------------------------------


def trace_lineage(recorded, start: list[tuple[str, int]]) -> list[dict]:
    """Every (table, Delta version) read on the way to `start`, walked back through what each
    materialization recorded it read (`recorded(table, version)` -> its metadata, or None when unknown,
    e.g. a table that is not an asset). One row per table version: what it read and what else it noted."""
    seen, rows, queue = set(), [], list(start)
    while queue:
        table, version = queue.pop(0)
        if (table, version) in seen or version is None:
            continue
        seen.add((table, version))
        metadata = recorded(table, version) or {}
        reads = {k.removeprefix("input_version/"): v for k, v in metadata.items() if k.startswith("input_version/")}
        notes = {
            k: metadata[k]
            for k in (
                "template",
                "template_sha256",
                "round",
                "feedback_set_version",
                "model",
                "backend",
                "total_cost_usd",
            )
            if k in metadata
        }
        rows.append({"table": table, "version": version, "reads": reads, **notes, "recorded": bool(metadata)})
        queue += [(t, v) for t, v in reads.items() if v is not None]
    return rows


def find_record(tables: DeltaRoot, table: str, column: str, value: str) -> dict | None:
    """The row of `table` whose `column` is `value`, from the newest Delta version that has it: an
    asset's partition holds only its latest record, so earlier ones are found by time travel."""
    latest = tables.version(table)
    for version in range(latest, -1, -1) if latest is not None else ():
        rows = tables.scan(table, version).filter(pl.col(column) == value).collect()
        if rows.height:
            return rows.row(0, named=True)
    return None


def lineage_version(lineage: list[dict], table: str) -> int | None:
    """The version of `table` the release's data was built from (the newest, if several were read)."""
    versions = [row["version"] for row in lineage if row["table"] == table]
    return max(versions) if versions else None


def teacher_cost(tables: DeltaRoot, domain: str, version: int | None) -> float | None:
    """Teacher dollars behind the data: cost_usd of the domain's teacher outputs at the version read."""
    if version is None:
        return None
    return float(
        tables.scan("teacher_outputs", version)
        .filter(pl.col("domain") == domain)
        .select(pl.col("cost_usd").sum())
        .collect()
        .item()
        or 0.0
    )


def code_version(project_root: Path) -> str:
    """The git commit of the project (with -dirty when files differ from it), or 'unknown'."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(project_root), *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


# --- the model card ----------------------------------------------------------------------------------


def metric_rows(checkpoint_id: str, history: pl.DataFrame, benchmarks: pl.DataFrame | None) -> list[dict]:
    """Every whole-domain score of the checkpoint and of its base, test split and benchmark suites."""
    test = (
        latest_evaluations(history)
        .filter((pl.col("checkpoint_id") == checkpoint_id) & (pl.col("topic") == ALL_TOPICS))
        .with_columns(source=pl.lit("test split"))
    )
    frames = [test.select("source", "metric", "model_role", "mean", "ci_low", "ci_high", "n")]
    if benchmarks is not None and not benchmarks.is_empty():
        bench = latest_benchmarks(benchmarks).filter(
            (pl.col("checkpoint_id") == checkpoint_id) & (pl.col("topic") == ALL_TOPICS)
        )
        frames.append(
            bench.select(
                pl.concat_str(pl.lit("benchmark "), "suite").alias("source"),
                "metric",
                "model_role",
                "mean",
                "ci_low",
                "ci_high",
                "n",
            )
        )
    return pl.concat(frames).sort("source", "metric", "model_role", descending=[False, False, True]).to_dicts()


def _dollars(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def model_card(
    release: dict,
    checkpoint: dict,
    base: dict,
    decision: GateDecision,
    metrics: list[dict],
    lineage: list[dict],
    rubrics: list[dict],
    training_config: dict | None,
    costs: dict,
    code: str,
) -> str:
    """Markdown: what the model is, what made it (data versions of every stage, prompt template and
    rubric hashes, code version, training config), how it scored (with intervals) and what it cost."""
    name, version = release["registered_model"], release["model_version"]
    lines = [
        f"# {name} v{version}: a {release['domain']} expert student",
        "",
        f"Released {release['released_at']:%Y-%m-%d %H:%M:%S %Z} by the promotion gate: {decision.description()}.",
        "",
        "## Model",
        "",
        f"- Base model: {checkpoint['base_model']} (student_base {checkpoint['base_id']}: "
        f"{base.get('model_uri')}, "
        f"read {base.get('documents')} documents of raw_documents v{base.get('documents_version')} in "
        f"{base.get('steps')} steps, config {base.get('config_hash')})",
        f"- Fine-tune: {checkpoint['finetune']}"
        + (f", LoRA {checkpoint['lora']}" if checkpoint["lora"] else "")
        + f"; checkpoint {checkpoint['checkpoint_id']} ({checkpoint['artifact_uri']}), "
        f"round {checkpoint['round']}, "
        f"{checkpoint['steps']} steps, final loss {checkpoint['final_loss']}",
        f"- Merged weights: {release['merged_uri']} (served as `{release['served_model']}`)",
        "",
        "| file | sha256 |",
        "|---|---|",
        *[f"| {path} | {digest} |" for path, digest in sorted(release["weights_sha256"].items())],
        "",
        "## Metrics (95% bootstrap intervals)",
        "",
        "| source | metric | role | mean [ci_low, ci_high] | n |",
        "|---|---|---|---|---|",
        *[f"| {m['source']} | {m['metric']} | {m['model_role']} | {interval_text(m, 4)} | {m['n']} |" for m in metrics],
        "",
        "## Data versions read at every stage",
        "",
        "| table | Delta version | read | noted |",
        "|---|---|---|---|",
    ]
    for row in lineage:
        reads = ", ".join(f"{t} v{v}" for t, v in sorted(row["reads"].items())) or "–"
        notes = ", ".join(
            f"{k}={row[k]}"
            for k in ("template", "template_sha256", "round", "feedback_set_version", "model", "backend")
            if k in row
        )
        lines.append(
            f"| {row['table']} | {row['version']} | {reads} | "
            f"{notes or ('–' if row['recorded'] else 'no materialization recorded')} |"
        )
    lines += ["", "## Prompt template and rubrics", ""]
    lines += [
        f"- prompt template {row['template']}: sha256 {row['template_sha256']}"
        for row in lineage
        if "template_sha256" in row
    ] or ["- prompt template: not recorded"]
    lines += [f"- rubric {r['rubric']}: sha256 {r['rubric_sha256']}" for r in rubrics] or [
        "- rubric: none (heuristic scores only, no judge)"
    ]
    config = (
        ["```json", json.dumps(training_config, indent=1, sort_keys=True), "```"]
        if training_config is not None
        else [
            f"not found: MLflow run {checkpoint['mlflow_run_id']} is not in this tracking store "
            f"(config hash {checkpoint['config_hash']})"
        ]
    )
    lines += [
        "",
        "## Training config (the training run's MLflow parameters)",
        "",
        *config,
        "",
        "## Cost",
        "",
        f"- teacher: {_dollars(costs['teacher_usd'])} (teacher_outputs v{costs['teacher_outputs_version']})",
        f"- GPU hours: {costs['gpu_hours']:.4f} (reading {base.get('gpu_seconds') or 0:.1f} s + SFT "
        f"{checkpoint['gpu_seconds']:.1f} s on {checkpoint['device']}); GPU ${checkpoint['gpu_cost_usd']:.4f}",
        f"- wall hours: {costs['wall_hours']:.4f}",
        "",
        "## Code",
        "",
        f"- code version: {code}",
        "",
        "## Reproduce",
        "",
        f"- the SFT rows it was trained on: `nexa-release-rows {release['domain']} --version {version}` "
        f"(sft_dataset v{checkpoint['sft_version']}, split train)",
        f"- serve it: `nexa-serve {release['domain']}` (while it is the champion)",
        "",
    ]
    return "\n".join(lines)


# --- reproducibility -----------------------------------------------------------------------------------


def release_record(tables: DeltaRoot, domain: str, version: int, registered_model: str) -> dict:
    """The release_history row of a registered model's version (a domain's own line, or its distilled one)."""
    if not tables.exists(RELEASE_HISTORY):
        raise ReleaseError(
            f"domain {domain}: no release has been made yet (no {RELEASE_HISTORY} table); "
            f"materialize model_release for it"
        )
    line = tables.scan(RELEASE_HISTORY).filter(
        (pl.col("domain") == domain) & (pl.col("registered_model") == registered_model)
    )
    found = line.filter(pl.col("model_version") == version).sort("released_at").collect()
    if found.is_empty():
        known = line.select("model_version").collect()
        raise ReleaseError(
            f"domain {domain}: no release v{version} of {registered_model}; released versions: "
            f"{sorted(known['model_version'].to_list()) or 'none'}"
        )
    return found.row(-1, named=True)


def champion_release(tables: DeltaRoot, domain: str, champion_version: int | None, registered_model: str) -> dict:
    """The release record of the registered model's champion; an unknown domain, or one without a champion,
    is an error that says so and what to do."""
    if champion_version is None:
        known = (
            sorted(tables.scan("raw_documents").select("domain").unique().collect()["domain"])
            if tables.exists("raw_documents")
            else []
        )
        if domain not in known:
            raise ReleaseError(
                f"unknown domain {domain!r}: the domains with data are {known or 'none'} "
                f"(a folder under the raw root, materialized)"
            )
        asset = "distilled_release" if registered_model.endswith(f"-{DISTILLED_LINE}") else "model_release"
        raise ReleaseError(
            f"domain {domain} has no champion of {registered_model}: no release has passed the promotion gate; "
            f"materialize {asset} for partition {domain} (its gate check says why a candidate was refused)"
        )
    return release_record(tables, domain, champion_version, registered_model)


def trained_rows(tables: DeltaRoot, release: dict, split: str = "train") -> pl.DataFrame:
    """The SFT rows a release was trained on: its sft_dataset version (Delta time travel), its domain."""
    return (
        tables.scan(SFT_DATASET, release["sft_version"])
        .filter((pl.col("domain") == release["domain"]) & (pl.col("split") == split))
        .sort("example_id")
        .collect()
    )
