"""Releasing a distilled student: a cheaper model of the domain, released as its own registered model
(<the domain's model>-distilled) so the domain's champion is never replaced by a smaller one. Its gate
reads distilled_scores: the student must beat the off-the-shelf base (by the gate's rule) and keep at least
`min_kept` of its teacher's mean, on the suites' accuracy where the domain has suites, else test token F1."""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from nexa_core.evaluate.leaderboard import distilled_markdown
from nexa_core.metric_registry import gate_source
from nexa_core.release.card import metric_glossary
from nexa_core.release.gate import GateDecision, GateRule, ReleaseError, Score, Tally, candidate_metrics


@dataclass(frozen=True)
class DistilledGateConfig(GateRule):
    """GateRule (`metric` auto as the champion's gate: suite accuracy, else the test split's primary metric, which
    distilled_scores has as token_f1), and `min_kept`: the least share of the teacher's mean the student must keep."""

    min_kept: float = 0.9


def distilled_score(scores: pl.DataFrame, role: str, metric: str) -> Score | None:
    """A role's row of distilled_scores on `metric` by its gate name (its source and metric)."""
    source, name = gate_source(metric)
    rows = scores.filter(
        (pl.col("model_role") == role) & (pl.col("source") == source) & (pl.col("metric") == name) & (pl.col("n") > 0)
    )
    if rows.is_empty():
        return None
    r = rows.row(0, named=True)
    return Score(metric, r["mean"], r["ci_low"], r["ci_high"], r["n"])


def distilled_gate(config: DistilledGateConfig, scores: pl.DataFrame) -> GateDecision:
    """Beat the base by the rule, and keep min_kept of the teacher's mean. The teacher's score is the decision's
    `champion` (the teacher is the domain's checkpoint the student was distilled from)."""
    metric = next((m for m in candidate_metrics(config) if distilled_score(scores, "student", m)), None)
    if metric is None:
        scored = sorted(set(scores.filter(pl.col("model_role") == "student")["metric"]))
        raise ReleaseError(f"the distilled student has no score on {config.metric!r}; distilled_scores has {scored}")
    candidate, base, teacher = (distilled_score(scores, role, metric) for role in ("student", "base", "teacher"))
    tally = Tally(candidate, config.rule, [f"metric {metric}, rule {config.rule}"])
    tally.weigh(
        "base",
        "the base",
        base,
        config.min_lift_over_base,
        f"the base has no {metric} score in distilled_scores; score it with the role base",
    )
    if teacher is None or not teacher.mean:
        tally.require(False, f"the teacher has no {metric} score to keep a share of")
    else:
        tally.lifts["kept_of_teacher"] = kept = candidate.mean / teacher.mean
        verdict = "at least" if kept >= config.min_kept else "under"
        reason = f"keeps {kept:.3f} of its teacher's {teacher}, {verdict} the {config.min_kept:.3f} asked"
        tally.require(kept >= config.min_kept, reason)
    return GateDecision(tally.passed, metric, config.rule, candidate, base, teacher, None, tally.lifts, tally.reasons)


def distilled_checkpoint(distilled: dict, teacher: dict) -> dict:
    """The distilled student in the shape release_row reads a checkpoint: its own id, the teacher's round, SFT
    set and base (its layers are the teacher's)."""
    return {
        "checkpoint_id": distilled["distilled_id"],
        **{k: teacher[k] for k in ("round", "sft_version", "base_id", "base_model")},
        "finetune": "distilled",
    }


def distilled_costs(distilled: dict) -> dict:
    """The distillation's own compute (the teacher's answers and training are its teacher's release's cost)."""
    on_gpu = str(distilled["device"]).startswith("cuda")
    return {"teacher_usd": None, "gpu_hours": distilled["wall_seconds"] / 3600 if on_gpu else 0.0}


def distilled_card(release: dict, distilled: dict, decision: GateDecision, scores: pl.DataFrame, code: str) -> str:
    """Markdown: what the student is (its teacher, the layers it kept, its size), how it and its teacher, the
    SFT-only copy and the base scored (95% intervals, tokens/s), what made it, and how to serve it."""
    name, version = release["registered_model"], release["model_version"]
    config = json.loads(distilled["kd_config"])
    return "\n".join(
        [
            f"# {name} v{version}: a distilled {release['domain']} student",
            "",
            f"Released {release['released_at']:%Y-%m-%d %H:%M:%S %Z} by the distilled gate: {decision.description()}.",
            "",
            "## Model",
            "",
            f"- Teacher: checkpoint {distilled['teacher_id']} ({distilled['teacher_uri']}), "
            f"{distilled['teacher_parameters']:,} parameters, {distilled['teacher_layers']} layers",
            f"- Student: {distilled['parameters']:,} parameters, layers kept {distilled['kept_layers']}; "
            f"{distilled['steps']} steps, loss {distilled['first_loss']:.4f} -> {distilled['final_loss']:.4f}, "
            f"{distilled['trained_tokens']:,} tokens, {distilled['precision']} on {distilled['device']}",
            f"- Learned from teacher_logits v{distilled['logits_version']} ({distilled['logits_id']}), "
            f"SFT set v{distilled['sft_version']}; KD config: `{json.dumps(config, sort_keys=True)}`",
            f"- Merged weights: {release['merged_uri']} (served as `{release['served_model']}`)",
            "",
            "## Scores (95% bootstrap intervals)",
            "",
            distilled_markdown(scores),
            "",
            *metric_glossary(scores["metric"].to_list()),
            "",
            "## Code and serving",
            "",
            f"- code version: {code}",
            f"- serve it: `nexa-serve {release['domain']} --distilled` (while it is this model's champion)",
            "",
        ]
    )
