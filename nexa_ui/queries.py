"""What the app shows, as polars queries over the Delta tables: plain functions, testable without Streamlit.

Every read is lazy and goes through a `Partition`: one domain's rows (the tables are partitioned on domain, so
only its files are opened), as the tables were at one instant (Delta time travel: a round of the feedback loop is
the state of every table at its end). A page shows a count, an aggregate or one page of rows (offset and limit),
never a whole table. Nothing here writes."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import polars as pl
from deltalake import DeltaTable

from nexa_core import tables as t
from nexa_core.delta import DeltaRoot
from nexa_core.distill.filters import REASONS
from nexa_core.evaluate.leaderboard import ALL_SUITES, ALL_TOPICS, latest_benchmarks, latest_evaluations

PAGE_ROWS = 25
KEPT = "kept"  # the verdict of a pair no filter rejected
# the order roles are shown in; a role not named here comes after them
ROLE_ORDER = ("student", "read", "base", "teacher", "pruned_sft")
# the tables whose partitions name the domains (the first that exists lists them all, since every run starts there)
DOMAIN_TABLES = (t.RAW_DOCUMENTS, t.TEACHER_INPUTS, t.SFT_DATASET, t.EVAL_METRICS, t.MODEL_RELEASE)


class NotThere(LookupError):
    """A table not written yet, or a partition without rows: the message says which, and what to materialize."""


def writer(table: str) -> str:
    """The asset whose materialization writes `table`."""
    side = t.SIDE_TABLES.get(table)
    return side.written_by if side else table


def _delta_table(root: DeltaRoot, table: str) -> DeltaTable:
    return DeltaTable(root.uri(table), storage_options=root.storage_options or None)


@dataclass(frozen=True)
class Partition:
    """One domain's rows of every table, as they were at `as_of` (None: as they are now)."""

    root: DeltaRoot
    domain: str
    as_of: datetime | None = None

    def when(self) -> str:
        return f" as of {self.as_of:%Y-%m-%d %H:%M:%S} UTC" if self.as_of else ""

    def table(self, name: str) -> pl.LazyFrame:
        """The whole table (every domain), lazily."""
        if not self.root.exists(name):
            raise NotThere(
                f"No {name} table under {self.root.root_uri} yet: materialize {writer(name)} "
                f"(e.g. `nexa-run {self.domain}`) and reload."
            )
        if self.as_of is None:
            return self.root.scan(name)
        version = version_at(self.root, name, self.as_of)
        if version is None:
            raise NotThere(f"No {name} table under {self.root.root_uri}{self.when()}: it was made later.")
        return self.root.scan(name, version)

    def rows(self, name: str, required: bool = True) -> pl.LazyFrame:
        """The domain's rows of `name`; with `required`, none is an error that says what to run."""
        frame = self.table(name).filter(pl.col("domain") == self.domain)
        if required and count(frame) == 0:
            raise NotThere(
                f"{name} has no rows for domain {self.domain}{self.when()}: materialize {writer(name)} "
                f"for {self.domain} and reload."
            )
        return frame


def count(frame: pl.LazyFrame) -> int:
    return frame.select(pl.len()).collect().item()


@dataclass(frozen=True)
class Page:
    rows: pl.DataFrame
    total: int
    number: int  # 1-based
    size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def first(self) -> int:
        """1-based index of the page's first row (0 when there is none)."""
        return (self.number - 1) * self.size + 1 if self.rows.height else 0


def page(frame: pl.LazyFrame, number: int = 1, size: int = PAGE_ROWS) -> Page:
    """Page `number` of `frame` (clamped to the pages there are): only its rows are collected."""
    total = count(frame)
    number = min(max(1, number), max(1, math.ceil(total / size)))
    return Page(frame.slice((number - 1) * size, size).collect(), total, number, size)


def domains(root: DeltaRoot) -> list[str]:
    """Every domain with rows in the graph's tables (read from the Delta logs' partition values)."""
    found: set[str] = set()
    for name in DOMAIN_TABLES:
        if root.exists(name):
            found |= {p["domain"] for p in _delta_table(root, name).partitions() if p.get("domain")}
    return sorted(found)


def version_at(root: DeltaRoot, table: str, when: datetime) -> int | None:
    """The table's newest version committed at or before `when`, by the commits' own timestamps (as `rounds` reads
    them; deltalake's time travel by datetime goes by the log files' modification times, which can differ from
    those by milliseconds); None when it was created later. Past versions do not change: looked up once."""
    key = (root.uri(table), tuple(sorted(root.storage_options.items())), when)
    if key not in _VERSIONS_AT:
        stamp = when.timestamp() * 1000
        history = _delta_table(root, table).history()
        _VERSIONS_AT[key] = max((e["version"] for e in history if e["timestamp"] <= stamp), default=None)
    return _VERSIONS_AT[key]


_VERSIONS_AT: dict[tuple, int | None] = {}


def _writes_domain(entry: dict, domain: str) -> bool:
    """Whether a Delta commit overwrote `domain`'s partition (its predicate names the domain's value)."""
    predicate = (entry.get("operationParameters") or {}).get("predicate") or ""
    return entry.get("operation") == "WRITE" and "'" + domain.replace("'", "''") + "'" in predicate


def rounds(root: DeltaRoot, domain: str, limit: int = 50) -> pl.DataFrame:
    """The domain's rounds, newest first: each write of its teacher_inputs partition starts one. round: the
    feedback round it mixes in plus one (0 from the corpus alone), as the SFT set counts; as_of: the instant
    before the next round began (null for the newest: the tables as they are)."""
    when = pl.Datetime("us", "UTC")
    schema = {"round": pl.Int64, "version": pl.Int64, "started_at": when, "as_of": when}
    if not root.exists(t.TEACHER_INPUTS):
        return pl.DataFrame(schema=schema)
    history = _delta_table(root, t.TEACHER_INPUTS).history(limit)
    writes = sorted((e["version"], e["timestamp"]) for e in history if _writes_domain(e, domain))
    rows = []
    for i, (version, stamp) in enumerate(writes):
        fed = (
            root.scan(t.TEACHER_INPUTS, version)
            .filter(pl.col("domain") == domain)
            .select(pl.col("feedback_round").max())
            .collect()
            .item()
        )
        end = writes[i + 1][1] if i + 1 < len(writes) else None
        rows.append(
            {
                "round": 0 if fed is None else fed + 1,
                "version": version,
                "started_at": datetime.fromtimestamp(stamp / 1000, timezone.utc),
                "as_of": None
                if end is None
                else datetime.fromtimestamp(end / 1000, timezone.utc) - timedelta(milliseconds=1),
            }
        )
    return pl.DataFrame(rows[::-1], schema=schema)


# --- Documents -------------------------------------------------------------------------------------------------


def document_counts(part: Partition) -> pl.DataFrame:
    """Documents and characters per source file and topic."""
    return (
        part.rows(t.RAW_DOCUMENTS)
        .group_by("source_path", "topic")
        .agg(pl.len().alias("documents"), pl.col("n_chars").sum().alias("characters"))
        .sort("source_path", "topic")
        .collect()
    )


def quarantine_reasons(part: Partition) -> pl.DataFrame:
    """Quarantined files and rows per reason (empty when nothing was quarantined)."""
    return (
        part.rows(t.RAW_QUARANTINE, required=False)
        .group_by("reason")
        .agg(pl.len().alias("rows"))
        .sort("rows", "reason", descending=[True, False])
        .collect()
    )


def quarantine(part: Partition) -> pl.LazyFrame:
    return (
        part.rows(t.RAW_QUARANTINE, required=False)
        .select("source_path", "source_row", "reason", "detail", pl.col("content").str.slice(0, 300))
        .sort("source_path", "source_row")
    )


def document_list(part: Partition) -> pl.LazyFrame:
    return (
        part.rows(t.RAW_DOCUMENTS)
        .select("doc_id", "title", "topic", "source_path", "source_row", "n_chars")
        .sort("source_path", "source_row")
    )


def document(part: Partition, doc_id: str) -> dict:
    found = part.rows(t.RAW_DOCUMENTS).filter(pl.col("doc_id") == doc_id).collect()
    if found.is_empty():
        raise NotThere(f"domain {part.domain}: no document {doc_id}{part.when()}")
    return found.row(0, named=True)


# --- Teacher and filters ---------------------------------------------------------------------------------------


def _reason_order(reason: str) -> int:
    return -1 if reason == KEPT else REASONS.index(reason) if reason in REASONS else len(REASONS)


def reason_counts(part: Partition) -> pl.DataFrame:
    """Pairs per verdict: kept, then each reject reason in the filters' order."""
    counts = (
        part.rows(t.FILTERED_PAIRS)
        .group_by(pl.col("reject_reason").fill_null(KEPT).alias("verdict"))
        .agg(pl.len().alias("pairs"))
        .collect()
    )
    return counts.sort(pl.col("verdict").map_elements(_reason_order, return_dtype=pl.Int64), "verdict")


def teacher_totals(part: Partition) -> dict:
    """The teacher's responses in numbers: tokens, cost, cache hits, unusable answers."""
    return (
        part.rows(t.TEACHER_OUTPUTS)
        .select(
            pl.len().alias("responses"),
            pl.col("from_cache").sum().alias("cache_hits"),
            pl.col("prompt_tokens").sum(),
            pl.col("completion_tokens").sum(),
            pl.col("cost_usd").sum(),
            pl.col("unusable_reason").is_not_null().sum().alias("unusable"),
        )
        .collect()
        .row(0, named=True)
    )


def teacher_requests(part: Partition) -> pl.LazyFrame:
    """One row per request: where its passage is from, the prompt version, and (once answered) the response's
    tokens, cost and cache hit, and how many of its pairs the filters kept."""
    requests = part.rows(t.TEACHER_INPUTS).select(
        "request_id", "topic", "source_path", "template_name", "feedback_round"
    )
    if part.root.exists(t.TEACHER_OUTPUTS):
        requests = requests.join(
            part.rows(t.TEACHER_OUTPUTS, required=False).select(
                "request_id", "from_cache", "prompt_tokens", "completion_tokens", "cost_usd", "unusable_reason"
            ),
            on="request_id",
            how="left",
        )
    if part.root.exists(t.FILTERED_PAIRS):
        pairs = (
            part.rows(t.FILTERED_PAIRS, required=False)
            .group_by("request_id")
            .agg(pl.len().alias("pairs"), pl.col("reject_reason").is_null().sum().alias("kept"))
        )
        requests = requests.join(pairs, on="request_id", how="left")
    return requests.sort("source_path", "request_id")


def teacher_request(part: Partition, request_id: str) -> tuple[dict, dict | None]:
    """(the request: passage, prompt version and rendered messages; its response, or None if not answered)."""
    found = part.rows(t.TEACHER_INPUTS).filter(pl.col("request_id") == request_id).collect()
    if found.is_empty():
        raise NotThere(f"domain {part.domain}: no teacher request {request_id}{part.when()}")
    response = None
    if part.root.exists(t.TEACHER_OUTPUTS):
        answered = part.rows(t.TEACHER_OUTPUTS, required=False).filter(pl.col("request_id") == request_id).collect()
        response = answered.row(0, named=True) if answered.height else None
    return found.row(0, named=True), response


def verdicts(reject_reason: str | None) -> dict[str, str]:
    """Each filter's verdict on a pair, in the filters' order: a pair stops at the first filter that rejects it,
    so the ones before it passed it and the ones after never saw it ("-"). A reason these filters do not know (a
    table written by other filters) leaves the others unknown ("?")."""
    if reject_reason is None:
        return {reason: "pass" for reason in REASONS}
    if reject_reason not in REASONS:
        return {reason: "?" for reason in REASONS} | {reject_reason: "REJECT"}
    stop = REASONS.index(reject_reason)
    return {reason: "pass" if i < stop else "REJECT" if i == stop else "-" for i, reason in enumerate(REASONS)}


def request_pairs(part: Partition, request_id: str) -> pl.DataFrame:
    """The pairs parsed from one response: question, answer, verdict, reason and each filter's verdict."""
    pairs = (
        part.rows(t.FILTERED_PAIRS)
        .filter(pl.col("request_id") == request_id)
        .select(
            "kind",
            "question",
            "answer",
            pl.col("reject_reason").fill_null(KEPT).alias("verdict"),
            "reject_detail",
            "pii_scrubbed",
        )
        .collect()
    )
    checks = [verdicts(None if v == KEPT else v) for v in pairs["verdict"]]
    names = list(dict.fromkeys(name for c in checks for name in c)) or list(REASONS)
    return pairs.with_columns(pl.Series(name, [c.get(name, "-") for c in checks], dtype=pl.String) for name in names)


def pairs_with(part: Partition, verdict: str | None = None) -> pl.LazyFrame:
    """The pairs with one verdict (kept, or a reject reason); every pair when None."""
    pairs = part.rows(t.FILTERED_PAIRS).with_columns(pl.col("reject_reason").fill_null(KEPT).alias("verdict"))
    if verdict is not None:
        pairs = pairs.filter(pl.col("verdict") == verdict)
    return pairs.select("verdict", "reject_detail", "topic", "kind", "question", "answer", "request_id").sort(
        "request_id", "question"
    )


# --- SFT set ---------------------------------------------------------------------------------------------------


def turn(role: str) -> pl.Expr:
    """The content of the `role` turn of an SFT row's messages."""
    return (
        pl.col("messages")
        .list.eval(pl.element().filter(pl.element().struct.field("role") == role).struct.field("content"))
        .list.first()
    )


def sft_counts(part: Partition) -> pl.DataFrame:
    """Examples per split and topic, with the SFT round."""
    return (
        part.rows(t.SFT_DATASET)
        .group_by("round", "split", "topic")
        .agg(pl.len().alias("examples"))
        .sort("round", "split", "topic")
        .collect()
    )


def sft_documents(part: Partition) -> pl.LazyFrame:
    """Examples per source document and split (a document is in one split only)."""
    return (
        part.rows(t.SFT_DATASET)
        .group_by("doc_id", "split")
        .agg(pl.len().alias("examples"), pl.col("topic").first(), pl.col("feedback_round").is_not_null().sum())
        .rename({"feedback_round": "from_feedback"})
        .sort("split", "doc_id")
    )


def sft_rows(frame: pl.LazyFrame) -> pl.LazyFrame:
    """SFT rows as question and answer."""
    return frame.select(
        "example_id",
        "split",
        "topic",
        "doc_id",
        "feedback_round",
        turn("user").alias("question"),
        turn("assistant").alias("answer"),
    ).sort("split", "example_id")


def feedback_rows(part: Partition) -> pl.LazyFrame:
    """The SFT rows a feedback set added, each with why its request was made (the feedback set's reason)."""
    rows = sft_rows(part.rows(t.SFT_DATASET).filter(pl.col("feedback_round").is_not_null()))
    if part.root.exists(t.FILTERED_PAIRS) and part.root.exists(t.FEEDBACK_SET):
        example_pairs = part.rows(t.SFT_DATASET).select("example_id", "pair_id")
        requests = part.rows(t.FILTERED_PAIRS, required=False).select("pair_id", "request_id")
        why = part.rows(t.FEEDBACK_SET, required=False).select("request_id", "reason").unique("request_id")
        rows = (
            rows.join(example_pairs, on="example_id", how="left")
            .join(requests, on="pair_id", how="left")
            .join(why, on="request_id", how="left")
            .drop("pair_id", "request_id")
        )
    return rows.sort("feedback_round", "example_id")


def feedback_set(part: Partition) -> pl.LazyFrame:
    """The domain's latest feedback set: each request aimed at a weak topic, and why."""
    return (
        part.rows(t.FEEDBACK_SET)
        .select(
            "round",
            "topic",
            "reason",
            "metric",
            "topic_score",
            pl.col("failed_example_ids").list.len().alias("failed_items"),
            pl.col("passage").str.slice(0, 200),
        )
        .sort("round", "topic")
    )


# --- Answers ---------------------------------------------------------------------------------------------------

ANSWER_VIEWS = {
    "all": "every item",
    "misses": "the student missed (its answer does not contain the gold answer)",
    "base_right": "the base was right and the student wrong (by 'contains')",
}


def roles(frame: pl.LazyFrame) -> list[str]:
    present = frame.select(pl.col("model_role").unique()).collect()["model_role"].to_list()
    return sorted(present, key=lambda r: (ROLE_ORDER.index(r) if r in ROLE_ORDER else len(ROLE_ORDER), r))


def evaluation(part: Partition) -> dict:
    """Which checkpoint eval_metrics holds for the domain: checkpoint_id, round, sft_version, roles, items."""
    scores = part.rows(t.EVAL_METRICS)
    head = scores.select("checkpoint_id", "round", "sft_version").head(1).collect().row(0, named=True)
    return head | {"roles": roles(scores), "items": count(scores.select("example_id").unique())}


def answers(part: Partition, view: str = "all", topic: str | None = None) -> pl.LazyFrame:
    """Per test item: question, gold answer, each role's answer side by side, then each role's token F1 and
    contains; `view` (ANSWER_VIEWS) and `topic` narrow it."""
    if view not in ANSWER_VIEWS:
        raise ValueError(f"answer view {view!r}: expected one of {list(ANSWER_VIEWS)}")
    scores = part.rows(t.EVAL_METRICS)
    if topic is not None:
        scores = scores.filter(pl.col("topic") == topic)
    present = roles(scores)
    items = scores.select("example_id", "topic", "question", "reference").unique("example_id")
    for role in present:
        items = items.join(
            scores.filter(pl.col("model_role") == role).select(
                "example_id",
                pl.col("prediction").alias(role),
                pl.col("token_f1").alias(f"{role}_f1"),
                pl.col("contains").alias(f"{role}_contains"),
            ),
            on="example_id",
            how="left",
        )
    if view != "all" and "student" not in present:
        raise NotThere(f"domain {part.domain}: eval_metrics has no student answers{part.when()}")
    if view == "misses":
        items = items.filter(pl.col("student_contains") == 0)
    elif view == "base_right":
        if "base" not in present:
            raise NotThere(f"domain {part.domain}: eval_metrics has no base answers{part.when()}")
        items = items.filter((pl.col("base_contains") == 1) & (pl.col("student_contains") == 0))
    scores_first = [f"{role}_{score}" for score in ("f1", "contains") for role in present]
    return items.select("example_id", "topic", "question", "reference", *present, *scores_first).sort(
        "topic", "example_id"
    )


def answer_topics(part: Partition) -> list[str]:
    return part.rows(t.EVAL_METRICS).select(pl.col("topic").unique().sort()).collect()["topic"].to_list()


def eval_metrics_names(part: Partition, checkpoint_id: str) -> list[str]:
    """The metrics eval_history holds a score for (n > 0) for the checkpoint."""
    history = part.rows(t.EVAL_HISTORY).filter((pl.col("checkpoint_id") == checkpoint_id) & (pl.col("n") > 0))
    return history.select(pl.col("metric").unique().sort()).collect()["metric"].to_list()


def topic_scores(part: Partition, checkpoint_id: str, metric: str) -> pl.DataFrame:
    """Each role's mean per topic with its 95% interval, from the checkpoint's latest evaluation (eval_history);
    topic __all__ is the whole test split."""
    history = (
        part.rows(t.EVAL_HISTORY)
        .filter((pl.col("checkpoint_id") == checkpoint_id) & (pl.col("metric") == metric))
        .collect()
    )
    return (
        latest_evaluations(history)
        .select("topic", "model_role", "mean", "ci_low", "ci_high", "n")
        .sort("topic", pl.col("model_role").map_elements(_role_rank, return_dtype=pl.Int64))
    )


def _role_rank(role: str) -> int:
    return ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER)


# --- Suites ----------------------------------------------------------------------------------------------------


def suites(part: Partition) -> pl.DataFrame:
    """The domain's benchmark suites as last run: items and kind per suite."""
    scores = part.rows(t.BENCHMARK_SCORES)
    return (
        scores.group_by("suite", "kind")
        .agg(pl.col("item_id").n_unique().alias("items"), pl.col("checkpoint_id").first())
        .sort("suite")
        .collect()
    )


def suite_items(part: Partition, suite: str) -> pl.LazyFrame:
    """Per item of a suite: question, choices, gold answer, and each role's pick and whether it was right."""
    scores = part.rows(t.BENCHMARK_SCORES).filter(pl.col("suite") == suite)
    items = scores.select("item_id", "row", "topic", "question", "choices", "reference").unique("item_id")
    for role in roles(scores):
        items = items.join(
            scores.filter(pl.col("model_role") == role).select(
                "item_id",
                pl.col("prediction").alias(role),
                pl.coalesce("accuracy", "exact_match").alias(f"{role}_right"),
            ),
            on="item_id",
            how="left",
        )
    return items.sort("row")


def suite_scores(part: Partition, checkpoint_id: str) -> pl.DataFrame:
    """Each role's accuracy (exact match for a generative suite) per suite with its 95% interval, from the
    checkpoint's latest run (benchmark_history); suite __all__ is every suite together."""
    history = (
        part.rows(t.BENCHMARK_HISTORY)
        .filter(
            (pl.col("checkpoint_id") == checkpoint_id)
            & (pl.col("topic") == ALL_TOPICS)
            & pl.col("metric").is_in(["accuracy", "exact_match"])
        )
        .collect()
    )
    return (
        latest_benchmarks(history)
        .select("suite", "metric", "model_role", "mean", "ci_low", "ci_high", "n", "chance")
        .sort("suite", "metric", pl.col("model_role").map_elements(_role_rank, return_dtype=pl.Int64))
    )


# --- Releases and leaderboard ----------------------------------------------------------------------------------


def leaderboard(part: Partition) -> pl.DataFrame:
    """Every checkpoint of every domain, ranked (the leaderboard table: one row per checkpoint)."""
    return part.table(t.LEADERBOARD).sort("rank").collect()


def scores_by_round(part: Partition, metric: str) -> pl.DataFrame:
    """The domain's student and base per round on `metric` over the whole test split (eval_history) and on
    accuracy over all suites (benchmark_history), each with its 95% interval and its latest evaluation."""
    keep = ["round", "checkpoint_id", "model_role", "mean", "ci_low", "ci_high", "n"]
    history = latest_evaluations(
        part.rows(t.EVAL_HISTORY).filter((pl.col("topic") == ALL_TOPICS) & (pl.col("metric") == metric)).collect()
    ).select(pl.lit(f"test split: {metric}").alias("score"), *keep)
    frames = [history]
    if part.root.exists(t.BENCHMARK_HISTORY):
        bench = part.rows(t.BENCHMARK_HISTORY, required=False).filter(
            (pl.col("suite") == ALL_SUITES) & (pl.col("topic") == ALL_TOPICS) & (pl.col("metric") == "accuracy")
        )
        frames.append(latest_benchmarks(bench.collect()).select(pl.lit("suites: accuracy").alias("score"), *keep))
    return (
        pl.concat(frames).filter(pl.col("model_role").is_in(["student", "base"])).sort("score", "round", "model_role")
    )


def history_metrics(part: Partition) -> list[str]:
    history = part.rows(t.EVAL_HISTORY).filter((pl.col("topic") == ALL_TOPICS) & (pl.col("n") > 0))
    return history.select(pl.col("metric").unique().sort()).collect()["metric"].to_list()


def releases(part: Partition) -> pl.DataFrame:
    """Every release of the domain (release_history), newest first, with the gate's decision in brief."""
    return (
        part.rows(t.RELEASE_HISTORY)
        .select(
            "released_at",
            "registered_model",
            "model_version",
            "served_model",
            "checkpoint_id",
            "round",
            "sft_version",
            "metric",
            "score",
            "ci_low",
            "ci_high",
            "base_score",
            "previous_champion",
            "release_id",
        )
        .sort("released_at", descending=True)
        .collect()
    )


def release(part: Partition, release_id: str) -> dict:
    """One release: its row, the gate's decision (parsed) and the lineage (parsed)."""
    found = part.rows(t.RELEASE_HISTORY).filter(pl.col("release_id") == release_id).collect()
    if found.is_empty():
        raise NotThere(f"domain {part.domain}: no release {release_id}{part.when()}")
    row = found.row(-1, named=True)
    return row | {"gate": json.loads(row["gate"] or "{}"), "lineage": json.loads(row["lineage"] or "[]")}


def release_rows(part: Partition, record: dict, split: str = "train") -> pl.LazyFrame:
    """The SFT rows a release was trained on: sft_dataset at the version it records (Delta time travel)."""
    if not part.root.exists(t.SFT_DATASET):
        raise NotThere(f"No {t.SFT_DATASET} table under {part.root.root_uri}")
    rows = part.root.scan(t.SFT_DATASET, record["sft_version"]).filter(
        (pl.col("domain") == part.domain) & (pl.col("split") == split)
    )
    return sft_rows(rows)
