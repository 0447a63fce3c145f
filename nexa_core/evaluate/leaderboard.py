"""Checkpoint leaderboard over the eval_history table: a ranked frame, a markdown table for the
Dagster UI and a self-contained HTML report with charts (inline PNG, nothing fetched).

eval_history is append-only, so every reader first keeps the latest evaluation per
(checkpoint, model role, topic, metric). Base-model rows carry the checkpoint_id of the student
they were evaluated beside, which is how a student finds its baseline. benchmark_history (the
domain's own benchmark suites) is read the same way and shown beside: multiple-choice accuracy of
the student and of its base over all suites, with intervals, and a per-domain report section. Which
metrics it shows, ranks on and sets beside the base, it reads from nexa_core.metric_registry when it runs.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from nexa_core import schemas
from nexa_core.files import write_atomically
from nexa_core.metric_registry import SUITES, TEST, lift_measures, names, primary

ALL_TOPICS = "__all__"
ALL_SUITES = "__all__"  # benchmark_history's rollup over every suite of a domain
NO_CHECKPOINTS = "no evaluated checkpoints yet"
ROLE_COLOURS = {"student": "#1f77b4", "base": "#aaaaaa"}
SOURCE_LABELS = {TEST: "test", SUITES: "suite"}  # as the lift table names a measure's source

# benchmark suites: the suites' primary metric (multiple-choice accuracy) over all of the domain's suites,
# student and base
BENCH_COLUMNS = {
    "bench_accuracy": pl.Float64,
    "bench_ci_low": pl.Float64,
    "bench_ci_high": pl.Float64,
    "bench_base_accuracy": pl.Float64,
    "bench_base_ci_low": pl.Float64,
    "bench_base_ci_high": pl.Float64,
    "bench_n": pl.Int64,
}
# how fast each checkpoint trained (checkpoint_history's schemas.SPEED columns)
SPEED_COLUMNS = {"tokens_per_second": pl.Float64, "mfu": pl.Float64}


def ranked_schema() -> dict:
    """The leaderboard's columns: one row per checkpoint, with a column per metric of the test split."""
    return {
        "rank": pl.Int64,
        "domain_rank": pl.Int64,
        "domain": pl.String,
        "round": pl.Int64,
        "checkpoint_id": pl.String,
        "sft_version": pl.Int64,
        "primary_metric": pl.String,
        "score": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "n": pl.Int64,
        "base_score": pl.Float64,
        "lift": pl.Float64,
        **schemas.metric_columns(TEST),
        "evaluated_at": pl.Datetime("us", "UTC"),
        **BENCH_COLUMNS,
        **SPEED_COLUMNS,
    }


# --- ranking ---------------------------------------------------------------------------------------


def latest_evaluations(history: pl.DataFrame) -> pl.DataFrame:
    """A re-evaluation supersedes older rows of the same checkpoint, role, topic and metric."""
    return history.sort("created_at", maintain_order=True).unique(
        ["checkpoint_id", "model_role", "topic", "metric"], keep="last", maintain_order=True
    )


def previous_round_score(history: pl.DataFrame, domain: str, round_: int, metric: str) -> float | None:
    """The student's latest score over all topics on `metric` in the round before `round_` (None in
    round 0, or when that round was never evaluated): what the feedback loop compares a round to."""
    if round_ == 0 or history.is_empty():
        return None
    earlier = (
        latest_evaluations(history)
        .filter(
            (pl.col("domain") == domain)
            & (pl.col("round") == round_ - 1)
            & (pl.col("model_role") == "student")
            & (pl.col("topic") == ALL_TOPICS)
            & (pl.col("metric") == metric)
        )
        .sort("created_at")
    )
    return earlier["mean"][-1] if earlier.height else None


def latest_benchmarks(benchmarks: pl.DataFrame) -> pl.DataFrame:
    """A re-run of a checkpoint's benchmark supersedes its older rows."""
    return benchmarks.sort("created_at", maintain_order=True).unique(
        ["checkpoint_id", "model_role", "suite", "topic", "metric"], keep="last", maintain_order=True
    )


def benchmark_accuracy(benchmarks: pl.DataFrame | None) -> pl.DataFrame:
    """Per checkpoint: the suites' primary metric (multiple-choice accuracy) over all its suites, of the student
    and of its base."""
    columns = {"checkpoint_id": pl.String, **BENCH_COLUMNS}
    if benchmarks is None or benchmarks.is_empty():
        return schemas.empty(columns)
    rows = latest_benchmarks(benchmarks).filter(
        (pl.col("suite") == ALL_SUITES) & (pl.col("topic") == ALL_TOPICS) & (pl.col("metric") == primary(SUITES)[0])
    )

    def role(name: str, prefix: str, n: bool) -> pl.DataFrame:
        return rows.filter(pl.col("model_role") == name).select(
            "checkpoint_id",
            pl.col("mean").alias(f"{prefix}_accuracy"),
            pl.col("ci_low").alias(f"{prefix}_ci_low"),
            pl.col("ci_high").alias(f"{prefix}_ci_high"),
            *([pl.col("n").alias("bench_n")] if n else []),
        )

    joined = role("student", "bench", True).join(
        role("base", "bench_base", False), on="checkpoint_id", how="full", coalesce=True
    )
    return schemas.conform(joined, columns)


def _has(metric: str) -> pl.Expr:
    # n = 0 means the metric was configured but nothing was scored (e.g. every judge answer unparseable)
    return ((pl.col("metric") == metric) & (pl.col("n") > 0)).any()


def training_speed(trained: pl.DataFrame | None) -> pl.DataFrame:
    """Per checkpoint: its training's tokens/s and MFU (the newest row of a checkpoint trained again)."""
    columns = {"checkpoint_id": pl.String, **SPEED_COLUMNS}
    if trained is None or trained.is_empty() or "mfu" not in trained.columns:
        return schemas.empty(columns)
    return schemas.conform(trained.unique("checkpoint_id", keep="last", maintain_order=True), columns)


def rank_checkpoints(
    history: pl.DataFrame, benchmarks: pl.DataFrame | None = None, trained: pl.DataFrame | None = None
) -> pl.DataFrame:
    """One row per student checkpoint on its whole domain, ranked across all domains by its primary
    metric. Rows mix judge_score and token_f1 only when some checkpoints lack a judge, so the
    primary_metric column says which one each score is. With `benchmarks` (benchmark_history), each
    row also carries its benchmark accuracy and its base's (null for a checkpoint never benchmarked); with
    `trained` (checkpoint_history), its training's tokens/s and MFU."""
    columns = ranked_schema()
    if history.is_empty():
        return schemas.empty(columns)
    *preferred, fallback = primary(TEST)  # the first one a checkpoint has wins; the last always exists
    overall = latest_evaluations(history).filter(pl.col("topic") == ALL_TOPICS)
    student = overall.filter(pl.col("model_role") == "student")
    checkpoints = student.group_by("domain", "checkpoint_id").agg(
        pl.coalesce(*[pl.when(_has(m)).then(pl.lit(m)) for m in preferred], pl.lit(fallback)).alias("primary_metric"),
        pl.col("round", "sft_version").sort_by("created_at").last(),
        *[pl.col("mean").filter(pl.col("metric") == m).first().alias(m) for m in names(TEST)],
        pl.col("created_at").max().alias("evaluated_at"),
    )
    keys = ["domain", "checkpoint_id", "primary_metric"]
    scores = student.select(
        "domain",
        "checkpoint_id",
        pl.col("metric").alias("primary_metric"),
        pl.col("mean").alias("score"),
        "ci_low",
        "ci_high",
        "n",
    )
    bases = overall.filter(pl.col("model_role") == "base").select(
        "domain", "checkpoint_id", pl.col("metric").alias("primary_metric"), pl.col("mean").alias("base_score")
    )
    ranked = (
        checkpoints.join(scores, on=keys, how="left")
        .join(bases, on=keys, how="left")
        .join(benchmark_accuracy(benchmarks), on="checkpoint_id", how="left")
        .join(training_speed(trained), on="checkpoint_id", how="left")
        .with_columns(lift=pl.col("score") - pl.col("base_score"))
        .sort(["score", "evaluated_at", "checkpoint_id"], descending=[True, True, False], nulls_last=True)
        .with_columns(rank=pl.int_range(1, pl.len() + 1))
        .with_columns(domain_rank=pl.col("rank").rank("ordinal").over("domain"))
    )
    return schemas.conform(ranked, columns)


# --- lift: each measure of a checkpoint beside its base ---------------------------------------------


def interval_text(row: dict | None, digits: int = 3) -> str:
    """mean [low, high] of a score row; a dash for no score."""
    if row is None or row["mean"] is None:
        return "–"
    return f"{row['mean']:.{digits}f} [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"


def verdict(student: dict | None, base: dict | None, higher_is_better: bool = True) -> str:
    """`lift` only when the student's 95% interval lies wholly on the better side of the base's (above it, for a
    metric where higher is better); a lift whose interval overlaps the base's is not a lift. `below`: wholly on
    the worse side."""
    if student is None or base is None:
        return "–"
    above, under = student["ci_low"] > base["ci_high"], student["ci_high"] < base["ci_low"]
    better, worse = (above, under) if higher_is_better else (under, above)
    return "lift" if better else "below" if worse else "overlap"


def lift_rows(history: pl.DataFrame, benchmarks: pl.DataFrame | None, checkpoint_ids: list[str]) -> list[dict]:
    """For each checkpoint, each lift-table measure of the registry (its test split's, then its suites'):
    student, read and base with their intervals and the verdict of student against base. Measures a checkpoint
    was not scored on are left out."""
    tables = {TEST: latest_evaluations(history).filter(pl.col("topic") == ALL_TOPICS)}
    if benchmarks is not None and not benchmarks.is_empty():
        tables[SUITES] = latest_benchmarks(benchmarks).filter(
            (pl.col("suite") == ALL_SUITES) & (pl.col("topic") == ALL_TOPICS)
        )
    rows = []
    for checkpoint in checkpoint_ids:
        for source, metric in lift_measures():
            if source not in tables:
                continue
            found = tables[source].filter((pl.col("checkpoint_id") == checkpoint) & (pl.col("metric") == metric.name))
            roles = {r["model_role"]: r for r in found.iter_rows(named=True) if r["mean"] is not None}
            if "student" not in roles:
                continue
            rows.append(
                {
                    "domain": roles["student"]["domain"],
                    "round": roles["student"]["round"],
                    "measure": f"{SOURCE_LABELS[source]} {metric.label}",
                    "n": roles["student"]["n"],
                    **{role: roles.get(role) for role in ("student", "read", "base")},
                    "verdict": verdict(roles["student"], roles.get("base"), metric.higher_is_better),
                }
            )
    return rows


def lift_text(rows: list[dict]) -> str:
    """The rows of lift_rows as an aligned text table."""
    roles = "".join(f" {role:>22s}" for role in ("student", "read", "base"))
    lines = [f"{'domain':10s} {'round':>5s} {'measure':22s} {'n':>3s}{roles}  verdict"]
    for r in rows:
        lines.append(
            f"{r['domain']:10s} {r['round']:>5d} {r['measure']:22s} {r['n']:>3d} {interval_text(r['student']):>22s} "
            f"{interval_text(r['read']):>22s} {interval_text(r['base']):>22s}  {r['verdict']}"
        )
    return "\n".join(lines)


# --- markdown --------------------------------------------------------------------------------------


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _score(row: dict) -> str:
    if row["score"] is None or row["ci_low"] is None or row["ci_high"] is None:
        return _num(row["score"])
    return f"{row['score']:.3f} ± {(row['ci_high'] - row['ci_low']) / 2:.3f}"


def _pm(mean: float | None, low: float | None, high: float | None) -> str:
    if mean is None or low is None or high is None:
        return _num(mean)
    return f"{mean:.3f} ± {(high - low) / 2:.3f}"


def _cells(row: dict) -> dict[str, str]:
    """A ranked row as display strings; shared by the markdown and HTML tables."""
    return {
        "rank": str(row["rank"]),
        "domain": row["domain"],
        "round": str(row["round"]),
        "checkpoint": row["checkpoint_id"][:12],
        "metric": row["primary_metric"],
        "score": _score(row),
        "base": _num(row["base_score"]),
        "lift": _num(row["lift"], signed=True),
        "n": str(row["n"]),
        "bench acc": _pm(row["bench_accuracy"], row["bench_ci_low"], row["bench_ci_high"]),
        "bench base": _pm(row["bench_base_accuracy"], row["bench_base_ci_low"], row["bench_base_ci_high"]),
        "tokens/s": "–" if row["tokens_per_second"] is None else f"{row['tokens_per_second']:.0f}",
        "MFU": "–" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%",
    }


def leaderboard_rows(ranked: pl.DataFrame, max_rows: int = 50) -> list[dict[str, str]]:
    """The top rows as the leaderboard shows them (the asset's JSON metadata, which the SDK reads)."""
    return [_cells(row) for row in ranked.head(max_rows).iter_rows(named=True)]


def _markdown_table(rows: list[dict[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return lines + ["| " + " | ".join(cell.replace("|", r"\|") for cell in row.values()) + " |" for row in rows]


def leaderboard_markdown(ranked: pl.DataFrame, max_rows: int = 50) -> str:
    if ranked.is_empty():
        return NO_CHECKPOINTS
    lines = _markdown_table(leaderboard_rows(ranked, max_rows))
    if ranked.height > max_rows:
        lines.append(f"\n_{ranked.height - max_rows} more checkpoints not shown_")
    return "\n".join(lines)


def distilled_table(summary: pl.DataFrame) -> list[dict[str, str]]:
    """Rows of distilled_scores (nexa_core.evaluate.distilled) as cells, one row per model: its size, tokens/s
    and each source's metric as mean [interval]."""
    columns = summary.select("source", "metric").unique(maintain_order=True).rows()
    table = []
    for (role,), rows in summary.group_by("model_role", maintain_order=True):
        first = rows.row(0, named=True)
        scores = {(r["source"], r["metric"]): r for r in rows.iter_rows(named=True)}
        table.append(
            {
                "model": role,
                "parameters": f"{first['parameters'] / 1e6:.1f}M" if first["parameters"] else "–",
                "new tokens/s": f"{first['new_tokens_per_s']:.0f}" if first["new_tokens_per_s"] else "–",
                **{f"{source} {metric}": interval_text(scores.get((source, metric))) for source, metric in columns},
            }
        )
    return table


def distilled_markdown(summary: pl.DataFrame) -> str:
    return "\n".join(_markdown_table(distilled_table(summary))) if summary.height else ""


# --- charts ----------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    # slow import, only when a report is drawn; a bare Figure on an Agg canvas is never registered
    # with pyplot, so nothing global keeps it alive after saving and no GUI backend is touched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    fig.clear()
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _by_role(rows: pl.DataFrame, key: str) -> pl.DataFrame:
    """Student and base side by side per key, with CI distances as error-bar lengths."""

    def pick(role: str, column: str) -> pl.Expr:
        return pl.col(column).filter(pl.col("model_role") == role).first()

    return (
        rows.group_by(key, maintain_order=True)
        .agg(*[pick(role, c).alias(f"{role}_{c}") for role in ROLE_COLOURS for c in ("mean", "ci_low", "ci_high")])
        .with_columns(
            *[
                e
                for role in ROLE_COLOURS
                for e in (
                    (pl.col(f"{role}_mean") - pl.col(f"{role}_ci_low")).clip(0).fill_null(0).alias(f"{role}_below"),
                    (pl.col(f"{role}_ci_high") - pl.col(f"{role}_mean")).clip(0).fill_null(0).alias(f"{role}_above"),
                )
            ]
        )
    )


def _paired_bars(pairs: pl.DataFrame, key: str, title: str, horizontal: bool) -> str:
    fig = _figure(6.4, max(2.4, 0.5 * pairs.height + 1.2) if horizontal else 3.6)
    ax = fig.add_subplot()
    for offset, (role, colour) in zip((-0.2, 0.2), ROLE_COLOURS.items()):
        at = [i + offset for i in range(pairs.height)]
        mean = pairs[f"{role}_mean"].fill_null(float("nan")).to_list()  # absent base: no bar, not a zero
        err = [pairs[f"{role}_below"].to_list(), pairs[f"{role}_above"].to_list()]
        draw = ax.barh if horizontal else ax.bar
        draw(at, mean, 0.4, **{"xerr" if horizontal else "yerr": err}, color=colour, capsize=3, label=role)
    labels = pairs[key].to_list()
    if horizontal:
        ax.set_yticks(range(pairs.height), labels)
        ax.invert_yaxis()  # weakest topic (sorted first) on top
        ax.set_xlim(0, 1.05)
    else:
        ax.set_xticks(range(pairs.height), labels)
        ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))  # outside the axes: never hides a bar
    return _png(fig)


def _label(checkpoint: dict) -> str:
    return f"{checkpoint['domain']} round {checkpoint['round']} ({checkpoint['checkpoint_id'][:12]})"


def _metric_chart(overall: pl.DataFrame, checkpoint: dict) -> str:
    metrics = names(TEST)
    rows = overall.filter(pl.col("checkpoint_id") == checkpoint["checkpoint_id"], pl.col("metric").is_in(metrics))
    pairs = _by_role(rows, "metric").sort(pl.col("metric").replace_strict(metrics, range(len(metrics))))
    return _paired_bars(pairs, "metric", f"{_label(checkpoint)}: student vs base", horizontal=False)


def _topic_chart(latest: pl.DataFrame, checkpoint: dict) -> str:
    metric = checkpoint["primary_metric"]
    rows = latest.filter(
        pl.col("checkpoint_id") == checkpoint["checkpoint_id"],
        pl.col("metric") == metric,
        pl.col("topic") != ALL_TOPICS,
    )
    pairs = _by_role(rows, "topic").sort("student_mean", "topic", nulls_last=True)
    return _paired_bars(pairs, "topic", f"{_label(checkpoint)}: {metric} per topic", horizontal=True)


def _trend_chart(overall: pl.DataFrame, per_round: pl.DataFrame) -> str:
    # one metric for the whole line: the shared primary metric, else the fallback every round has
    shared = set(per_round["primary_metric"])
    metric = shared.pop() if len(shared) == 1 else primary(TEST)[-1]
    rows = (
        overall.filter(pl.col("metric") == metric)
        .drop("round")
        .join(per_round.select("checkpoint_id", "round"), on="checkpoint_id")
    )
    points = _by_role(rows, "round").sort("round")
    rounds = points["round"].to_list()
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.errorbar(
        rounds,
        points["student_mean"].fill_null(float("nan")).to_list(),
        yerr=[points["student_below"].to_list(), points["student_above"].to_list()],
        marker="o",
        capsize=3,
        color=ROLE_COLOURS["student"],
        label="student (CI)",
    )
    ax.plot(
        rounds, points["base_mean"].fill_null(float("nan")).to_list(), "o--", color=ROLE_COLOURS["base"], label="base"
    )
    ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{per_round['domain'][0]}: {metric} over rounds")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    return _png(fig)


# --- HTML report -----------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{display:block;margin:1em 0}"
)


def _html_table(rows: list[dict[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row.values()) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _table_html(ranked: pl.DataFrame) -> str:
    return _html_table(
        [
            {
                **_cells(row),
                "checkpoint": row["checkpoint_id"],
                **{m: _num(row[m]) for m in names(TEST)},
                "evaluated_at": f"{row['evaluated_at']:%Y-%m-%d %H:%M}",
            }
            for row in ranked.iter_rows(named=True)
        ]
    )


SMALLER_STUDENTS = (
    "<h2>Smaller students</h2><p>Each domain's latest distilled student (student_distilled) beside its teacher, "
    "the same pruned copy trained by SFT alone and the off-the-shelf base: test split and suites with 95% "
    "bootstrap intervals, size, and new tokens/s of greedy answers to the test split.</p>"
)


def _distilled_html(distilled: pl.DataFrame) -> str:
    parts = [SMALLER_STUDENTS]
    for (domain,), rows in distilled.sort("domain").group_by("domain", maintain_order=True):
        parts.append(f"<h3>{html.escape(domain)}</h3>" + _html_table(distilled_table(rows)))
    return "".join(parts)


def _img(png: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{png}" alt="{html.escape(alt)}">'


def _domain_html(latest: pl.DataFrame, overall: pl.DataFrame, ranked: pl.DataFrame, domain: str) -> str:
    # the latest-evaluated checkpoint stands for its round; the last round's is "the latest student"
    per_round = (
        ranked.filter(pl.col("domain") == domain)
        .sort("round", "evaluated_at")
        .unique("round", keep="last", maintain_order=True)
    )
    checkpoint = per_round.row(-1, named=True)
    charts = [
        _img(_metric_chart(overall, checkpoint), f"{domain}: latest student vs base per metric"),
        _img(_trend_chart(overall, per_round), f"{domain}: primary metric over rounds"),
        _img(_topic_chart(latest, checkpoint), f"{domain}: per-topic scores, latest student vs base"),
    ]
    return f"<h2>{html.escape(domain)}</h2>" + "".join(charts)


def _benchmark_html(latest: pl.DataFrame, domain: str) -> str:
    """The domain's most recently benchmarked checkpoint: every suite and topic, student vs base with
    intervals, and a chart of accuracy per topic over all suites."""
    rows = latest.filter(pl.col("domain") == domain)
    checkpoint = rows.sort("created_at")["checkpoint_id"][-1]
    rows = rows.filter((pl.col("checkpoint_id") == checkpoint) & pl.col("metric").is_in(names(SUITES)))
    keyed = rows.with_columns(key=pl.concat_str("suite", "topic", "metric", separator="|"))
    table = _by_role(keyed, "key").join(
        keyed.group_by("key").agg(pl.col("n").max(), pl.col("chance").max()), on="key", how="left"
    )
    cells = []
    for r in table.sort("key").iter_rows(named=True):
        suite, topic, metric = r["key"].split("|")
        cells.append(
            [
                suite,
                topic,
                metric,
                _pm(r["student_mean"], r["student_ci_low"], r["student_ci_high"]),
                _pm(r["base_mean"], r["base_ci_low"], r["base_ci_high"]),
                str(r["n"]),
                _num(r["chance"]),
            ]
        )
    head = "".join(f"<th>{name}</th>" for name in ("suite", "topic", "metric", "student", "base", "n", "chance"))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    parts = [
        f"<h3>{html.escape(domain)}: benchmark suites (checkpoint {html.escape(checkpoint[:12])})</h3>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
    ]
    metric = primary(SUITES)[0]
    topics = rows.filter(
        (pl.col("suite") == ALL_SUITES) & (pl.col("topic") != ALL_TOPICS) & (pl.col("metric") == metric)
    )
    if topics.height:
        pairs = _by_role(topics, "topic").sort("student_mean", "topic", nulls_last=True)
        parts.append(
            _img(
                _paired_bars(pairs, "topic", f"{domain}: benchmark {metric} per topic", horizontal=True),
                f"{domain}: benchmark {metric} per topic, student vs base",
            )
        )
    return "".join(parts)


def write_report(
    history: pl.DataFrame,
    ranked: pl.DataFrame,
    path: Path,
    benchmarks: pl.DataFrame | None = None,
    distilled: pl.DataFrame | None = None,
) -> Path:
    """Self-contained HTML: the ranked table, then per domain three charts (metrics of the latest
    student vs base, primary metric over rounds, per-topic scores) and, with `benchmarks`
    (benchmark_history), a benchmark-suite section, and with `distilled` (distilled_scores) the smaller
    students. Written beside and renamed, so a reader never sees half a file."""
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Checkpoint leaderboard</title>"
        f"<style>{_STYLE}</style></head><body><h1>Checkpoint leaderboard</h1><p>Generated {generated}</p>"
    ]
    if ranked.is_empty():
        parts.append(f"<p>{html.escape(NO_CHECKPOINTS)}</p>")
    else:
        latest = latest_evaluations(history)
        overall = latest.filter(pl.col("topic") == ALL_TOPICS)
        parts.append(_table_html(ranked))
        parts += [_domain_html(latest, overall, ranked, d) for d in sorted(ranked["domain"].unique())]
    if benchmarks is not None and not benchmarks.is_empty():
        latest_bench = latest_benchmarks(benchmarks)
        parts.append(
            "<h2>Benchmark suites</h2><p>Questions written by people (data/eval/&lt;domain&gt;/), run with "
            "lm-evaluation-harness; 95% bootstrap intervals; chance is the accuracy of a uniform guess.</p>"
        )
        parts += [_benchmark_html(latest_bench, d) for d in sorted(latest_bench["domain"].unique())]
    if distilled is not None and not distilled.is_empty():
        parts.append(_distilled_html(distilled))
    parts.append("</body></html>")
    return write_atomically(Path(path), lambda partial: partial.write_text("".join(parts), encoding="utf-8"))
