"""Sweeps: a recipe question answered by runs of the graph. A grid of ASSET.KEY settings (every combination, or N
of them drawn with a seed) becomes points; each point is a run of the training and evaluation assets with its
settings (nexa_assets/sweep.py launches them); `sweep_rows` puts each point's checkpoint beside its scores with
intervals, and `write_sweep_report` plots each score against each swept setting and names the best point and
whether it is apart from the default."""

from __future__ import annotations

import html
import itertools
import json
import random
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from nexa_core import schemas
from nexa_core.files import write_atomically
from nexa_core.ids import content_id
from nexa_core.recipe import STAGE_CONFIGS
from nexa_core.settings import SettingsError

STAGES = {config.stage: config for config in STAGE_CONFIGS}
TRAINING = ("student_base", "student_checkpoint")  # what a point trains; the evaluation follows its checkpoint
EVALUATION = ("eval_predictions", "eval_metrics", "benchmark_scores")
SWEEP_TAG, POINT_TAG = "nexa/sweep", "nexa/sweep_point"


class SweepError(ValueError):
    pass


def check_grid(grid: dict[str, list]) -> dict[str, list]:
    """{ASSET.KEY: [values]} checked against each stage's typed settings: a misspelt key or a wrong value names it."""
    for target, values in grid.items():
        asset, _, key = target.partition(".")
        for value in values if asset in STAGES else ():
            try:
                STAGES[asset].load(overrides={key: value})
            except SettingsError as exc:
                raise SweepError(f"--grid {target}: {exc}") from None
    return grid


def grid_points(grid: dict[str, list], sample: int = 0, seed: int = 17) -> list[dict]:
    """Every combination of the grid's values, in order; with `sample` > 0 that many of them, drawn with `seed`
    (the draw is the same for the same grid and seed, so a resumed sweep has the same points)."""
    combinations = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if sample and sample < len(combinations):
        chosen = sorted(random.Random(seed).sample(range(len(combinations)), sample))
        combinations = [combinations[i] for i in chosen]
    return combinations


def sweep_id(domain: str, grid: dict[str, list], sample: int, seed: int) -> str:
    return content_id(domain, grid, sample, seed)[:10]


def point_assets(point: dict) -> list[str]:
    """The assets a point runs: its checkpoint and the evaluation, and the reading when it sweeps a reading setting."""
    reads = any(target.startswith("student_base.") for target in point)
    return [*(TRAINING if reads else TRAINING[1:]), *EVALUATION]


def is_default(point: dict) -> bool:
    """Whether each of the point's settings is its stage's default. A key that is no stage setting counts as not:
    another asset's, or an input a replay pins (documents_version, sft_version, replay_of)."""
    for target, value in point.items():
        asset, key = target.split(".", 1)
        if asset not in STAGES:
            return False
        try:
            if STAGES[asset].load(overrides={key: value}) != STAGES[asset].defaults():
                return False
        except SettingsError:
            return False
    return True


def sweep_rows(
    domain: str,
    sweep: str,
    points: list[dict],
    runs: dict[int, str],
    checkpoints: pl.DataFrame,
    history: pl.DataFrame,
    benchmarks: pl.DataFrame | None,
    shared: dict | None = None,
) -> pl.DataFrame:
    """One row per point: its settings, its run and checkpoint (from checkpoint_history, by the run that made
    it), train time and tokens/s, and each lift-table measure of the student beside the off-the-shelf base, with
    intervals; `shared`: the settings every point has (the default point has them at their defaults too). A
    point without a successful run has a row with no checkpoint and no scores."""
    from nexa_core.evaluate.leaderboard import lift_rows

    rows = []
    for index, point in enumerate(points):
        run_id = runs.get(index)
        made = checkpoints.filter(pl.col("dagster_run_id") == run_id) if run_id else checkpoints.clear()
        checkpoint = made.sort("created_at").row(-1, named=True) if made.height else None
        scores = []
        if checkpoint:
            for lift in lift_rows(history, benchmarks, [checkpoint["checkpoint_id"]]):
                student, base = lift["student"], lift["base"] or {}
                scores.append(
                    {
                        "measure": lift["measure"],
                        "n": lift["n"],
                        **{k: student[k] for k in ("mean", "ci_low", "ci_high")},
                        **{f"base_{k}": base.get(k) for k in ("mean", "ci_low", "ci_high")},
                    }
                )
        seconds = checkpoint["wall_seconds"] if checkpoint else None
        tokens = checkpoint.get("trained_tokens") if checkpoint else None
        rows.append(
            {
                "domain": domain,
                "sweep_id": sweep,
                "point": index,
                "settings": json.dumps(point, sort_keys=True),
                "is_default": is_default((shared or {}) | point),
                "dagster_run_id": run_id,
                "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
                "artifact_uri": checkpoint["artifact_uri"] if checkpoint else None,
                "train_seconds": seconds,
                "trained_tokens": tokens,
                "tokens_per_second": tokens / seconds if tokens and seconds else None,
                "scores": scores,
                "created_at": datetime.now(timezone.utc),
            }
        )
    return pl.DataFrame(rows, schema=schemas.SWEEP_RESULTS)


def best_points(rows: pl.DataFrame) -> list[dict]:
    """Per measure: the point with the highest mean, the default point, and whether the best one's interval lies
    wholly above the default's (apart) or not."""
    from nexa_core.evaluate.leaderboard import verdict

    scored = rows.filter(pl.col("checkpoint_id").is_not_null()).explode("scores").unnest("scores")
    out = []
    for measure in scored["measure"].drop_nulls().unique(maintain_order=True):
        of = scored.filter(pl.col("measure") == measure).sort("mean", descending=True, nulls_last=True)
        best = of.row(0, named=True)
        default = of.filter(pl.col("is_default"))
        versus = default.row(0, named=True) if default.height else None
        out.append(
            {
                "measure": measure,
                "best_point": best["point"],
                "best": best,
                "default_point": versus["point"] if versus else None,
                "apart": (
                    "the best is the default"
                    if versus and versus["point"] == best["point"]
                    else verdict(best, versus, True).replace("base", "default")
                    if versus
                    else "no point of the sweep has the default settings"
                ),
            }
        )
    return out


def write_sweep_report(rows: pl.DataFrame, path: Path) -> Path:
    """HTML beside the leaderboard: per measure, the student's score (and the base's) against each swept setting
    with 95% intervals; the points' table; the best point per measure and whether it is apart from the default."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = rows["sweep_id"][0]
    settings = [json.loads(s) for s in rows["settings"]]
    swept = sorted({key for point in settings for key in point})
    scored = rows.filter(pl.col("checkpoint_id").is_not_null()).explode("scores").unnest("scores")
    measures = scored["measure"].drop_nulls().unique(maintain_order=True).to_list()
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep {sweep}</title></head><body>"
        f"<h1>Sweep {html.escape(sweep)} ({html.escape(rows['domain'][0])})</h1>"
        f"<p>{rows.height} points; each a run of the training and evaluation assets. Means with 95% bootstrap "
        f"intervals; the base is the off-the-shelf model the student started from.</p>"
    ]
    if measures and swept:
        figure, axes = plt.subplots(
            len(measures), len(swept), figsize=(4 * len(swept), 3 * len(measures)), squeeze=False
        )
        for i, measure in enumerate(measures):
            of = scored.filter(pl.col("measure") == measure)
            for j, key in enumerate(swept):
                ax = axes[i][j]
                values = [settings[p].get(key) for p in of["point"]]
                x = [str(v) for v in values]
                for label, prefix, style in (("student", "", "o"), ("base", "base_", "s")):
                    mean, low, high = (of[f"{prefix}{k}"].to_list() for k in ("mean", "ci_low", "ci_high"))
                    keep = [n for n, m in enumerate(mean) if m is not None]
                    ax.errorbar(
                        [x[n] for n in keep],
                        [mean[n] for n in keep],
                        yerr=[[mean[n] - low[n] for n in keep], [high[n] - mean[n] for n in keep]],
                        fmt=style,
                        capsize=3,
                        label=label,
                    )
                ax.set_xlabel(key)
                ax.set_ylabel(measure)
                ax.legend(fontsize=7)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        plt.close(figure)
        parts.append(
            f"<img alt='scores against settings' src='data:image/png;base64,"
            f"{base64.b64encode(buffer.getvalue()).decode()}'>"
        )
    elif measures:  # a replay, or a sweep of one point: nothing to plot against
        parts.append("<p>No setting is swept: the points' table below holds the scores.</p>")
    parts.append("<h2>Best point per measure</h2><ul>")
    for best in best_points(rows):
        parts.append(
            f"<li>{html.escape(best['measure'])}: point {best['best_point']} "
            f"({html.escape(rows['settings'][best['best_point']])}), {best['best']['mean']:.3f} "
            f"[{best['best']['ci_low']:.3f}, {best['best']['ci_high']:.3f}]; {html.escape(best['apart'])}</li>"
        )
    parts.append(
        "</ul><h2>Points</h2><table border='1' cellpadding='3'><tr><th>point</th><th>settings</th>"
        "<th>checkpoint</th><th>train s</th><th>tokens/s</th><th>scores</th></tr>"
    )
    for row in rows.iter_rows(named=True):
        scores = "<br>".join(
            f"{html.escape(s['measure'])} {s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
            for s in row["scores"]
            if s["mean"] is not None
        )
        speed = f"{row['tokens_per_second']:.0f}" if row["tokens_per_second"] else "–"
        seconds = f"{row['train_seconds']:.0f}" if row["train_seconds"] else "–"
        parts.append(
            f"<tr><td>{row['point']}{' (default)' if row['is_default'] else ''}</td>"
            f"<td>{html.escape(row['settings'])}</td><td>{row['checkpoint_id'] or 'no successful run'}</td>"
            f"<td>{seconds}</td><td>{speed}</td><td>{scores}</td></tr>"
        )
    parts.append("</table></body></html>")
    return write_atomically(Path(path), lambda partial: partial.write_text("".join(parts), encoding="utf-8"))
