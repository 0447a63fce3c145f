"""The model card of a release: what the model is, what made it (the data version of every stage, prompt
template and rubric hashes, code version, training config), how it scored with intervals, and what it cost.
Written beside the merged weights (CARD) and as the registered version's description."""

from __future__ import annotations

import json

import polars as pl

from nexa_core import metric_registry
from nexa_core.evaluate.leaderboard import ALL_TOPICS, interval_text, latest_benchmarks, latest_evaluations
from nexa_core.release.gate import GateDecision

CARD = "README.md"  # the model card beside the merged weights, where the Hugging Face hub looks for one


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


def metric_glossary(names: list[str]) -> list[str]:
    """What each registered metric among `names` means, which way is better and how it is aggregated, as
    markdown list items in the registry's order."""
    shown = set(names)
    return [
        f"- {m.name} ({m.label}; {m.direction()}; {m.aggregation} over items, {m.interval} interval): {m.description}"
        for m in metric_registry.REGISTRY.values()
        if m.name in shown
    ]


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
        *metric_glossary([m["metric"] for m in metrics]),
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
