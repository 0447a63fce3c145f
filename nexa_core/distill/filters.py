"""filtered_pairs: parse teacher responses into question/answer pairs and filter them.

Every pair keeps its row; a dropped one carries `reject_reason` (and `reject_detail`), so the
per-reason counts are a group-by and nothing disappears. Order: parse -> PII scrub -> length bounds
-> refusal/boilerplate -> what a student cannot learn from (a question with no content word, an answer
of function words only, an answer cut mid-phrase, an answer the question already holds) -> grounding
-> exact duplicates -> near duplicates (MinHash LSH).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import polars as pl

from nexa_core import schemas
from nexa_core.distill.dedup import MinHashConfig, near_duplicates
from nexa_core.ids import content_id
from nexa_core.teacher import TeacherResponseError, parse_pairs
from nexa_core.teacher.question_forms import FUNCTION_WORDS

# The reasons of the rules any teacher output meets first (the restatements' screen shares them).
SCREEN_REASONS = ("unusable_response", "unparseable_response", "too_short", "too_long", "refusal")
REASONS = (
    *SCREEN_REASONS,
    "no_content_word",
    "function_word_answer",
    "cut_mid_phrase",
    "answer_in_question",
    "ungrounded",
    "exact_duplicate",
    "near_duplicate",
)

# Rust-regex syntax (no look-around): every pattern runs vectorised inside polars.
EMAIL = r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"
PHONE = r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\b\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}\b"
REFUSAL = (
    r"(?i)\b(?:as an ai|i(?:'m| am) (?:sorry|unable|not able)|i cannot|i can't|cannot (?:help|assist|answer)|"
    r"not (?:mentioned|stated|provided) in the passage|the passage does not|no information)\b"
)
WORDS = r"\w+"
WHOLE_WORDS = r"\w+(?:[-‐'’]\w+)*"  # a hyphenated word is one ("tail-like" does not end on "like")
STOP_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "and",
    "or",
    "in",
    "on",
    "to",
    "is",
    "are",
    "was",
    "were",
    "be",
    "by",
    "for",
    "with",
    "as",
    "at",
    "from",
    "that",
    "this",
    "which",
    "it",
    "its",
    "because",
]

# The frames the teachers wrap a question in ("Fill in the blank:", "What is the term for", "According to
# the passage"): no content of the question's own.
QUESTION_FRAME = frozenset(
    """fill blank complete statement according passage term terms happens happen quantity define describe explain
name state list identify give example""".split()
)
# A phrase does not end on an article, a possessive, a conjunction, a relative word or a preposition that
# English does not leave stranded: an answer that does was cut before its end ("... in the night sky besides").
# Prepositions that do end phrases ("the medium they interact with") and pronouns ("into another") are not here.
_DANGLING = """the a an its their his her our your my whose every and or but nor yet because although though while
whereas if unless whether than which who whom where when of as besides between among amongst beneath beside toward
towards during per via unlike except upon onto despite including""".split()
_OPEN_END = r"(?:[,;:(\[/\-–—]|\.\.\.|…)$"


@dataclass(frozen=True)
class FilterConfig:
    min_question_chars: int = 12
    max_question_chars: int = 600
    min_answer_chars: int = 1
    max_answer_chars: int = 800
    min_grounding: float = 0.6  # share of the answer's content words found in the passage
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    # A near duplicate must also give the same answer: word-set Jaccard of the two answers at least this.
    min_answer_overlap: float = 0.5


def _scrub(column: str) -> pl.Expr:
    return pl.col(column).str.replace_all(EMAIL, "[EMAIL]").str.replace_all(PHONE, "[PHONE]")


def scrub_pii(text: str) -> tuple[str, bool]:
    scrubbed = pl.DataFrame({"t": [text]}).select(_scrub("t")).item()
    return scrubbed, scrubbed != text


def normalised_text(column: str) -> pl.Expr:
    """The column's words, lower case, one space apart: what two texts that say the same share."""
    return pl.col(column).str.to_lowercase().str.extract_all(WORDS).list.join(" ")


def explode_pairs(outputs: pl.DataFrame, inputs: pl.DataFrame) -> pl.DataFrame:
    """One row per parsed pair; a response that was quarantined by the teacher's rules or does not
    parse is one rejected row naming it."""
    return explode_replies(outputs, inputs, parse_pairs, ("kind", "question", "answer"), "pair_index")


def explode_replies(
    outputs: pl.DataFrame, inputs: pl.DataFrame, parse: Callable[[str], list[dict]], fields: tuple[str, ...], index: str
) -> pl.DataFrame:
    """One row per item of each parsed reply (its string `fields`, its place in the reply as `index`), with
    the passage columns of its request; a response that was quarantined by the teacher's rules or does
    not parse is one rejected row naming it."""
    joined = outputs.select("domain", "request_id", "response", "unusable_reason").join(
        inputs.select("request_id", "doc_id", "passage_id", "topic", "source_path", "feedback_round"),
        on="request_id",
        how="left",
        maintain_order="left",
    )
    cols: dict[str, list] = {k: [] for k in ("request_id", index, *fields, "reject_detail", "reject_reason")}
    for domain, request_id, response, unusable, source_path in joined.select(
        "domain", "request_id", "response", "unusable_reason", "source_path"
    ).iter_rows():
        where = f"partition {domain}, request {request_id} (from {source_path})"
        if unusable:  # quarantined by the teacher's rules (truncated, filtered, empty, not JSON)
            items, reason, detail = [None], "unusable_response", f"{where}: teacher response quarantined ({unusable})"
        else:
            try:
                items = parse(response)
            except TeacherResponseError as exc:
                items, reason, detail = [None], "unparseable_response", f"{where}: {exc}"
        for place, item in enumerate(items):
            cols["request_id"].append(request_id)
            cols[index].append(place if item else None)
            for name in fields:
                cols[name].append(item[name] if item else None)
            cols["reject_detail"].append(None if item else detail)
            cols["reject_reason"].append(None if item else reason)
    frame = pl.DataFrame(
        cols,
        schema={
            "request_id": pl.String,
            index: pl.Int64,
            **dict.fromkeys(fields, pl.String),
            "reject_detail": pl.String,
            "reject_reason": pl.String,
        },
    )
    return frame.join(joined.drop("response", "unusable_reason"), on="request_id", how="left", maintain_order="left")


def grounding(
    pairs: pl.DataFrame, inputs: pl.DataFrame, column: str = "answer", ignored: Collection[str] = STOP_WORDS
) -> pl.Series:
    """Share of the content words (not `ignored`) of each row's `column` that occur in its passage (1.0
    when it has none); rows are keyed by `row` and find their passage by `request_id` in `inputs`."""
    # Words are joined as 64-bit hashes: much cheaper than joining strings.
    answer_words = (
        pairs.select("row", "request_id", pl.col(column).str.to_lowercase().str.extract_all(WORDS).alias("word"))
        .explode("word")
        .filter(pl.col("word").is_not_null() & ~pl.col("word").is_in(list(ignored)))
        .with_columns(pl.col("word").hash())
    )
    passage_words = (
        inputs.join(pairs.select("request_id").unique(), on="request_id", how="semi")
        .select("request_id", pl.col("passage").str.to_lowercase().str.extract_all(WORDS).alias("word"))
        .explode("word")
        .with_columns(pl.col("word").hash())
    )
    found = answer_words.join(passage_words, on=["request_id", "word"], how="semi").group_by("row").len("found")
    share = (
        answer_words.group_by("row")
        .len("total")
        .join(found, on="row", how="left")
        .select("row", (pl.col("found").fill_null(0) / pl.col("total")).alias("grounding"))
    )
    return pairs.select("row").join(share, on="row", how="left", maintain_order="left")["grounding"].fill_null(1.0)


def _words(column: str) -> pl.Expr:
    return pl.col(column).str.to_lowercase().str.extract_all(WHOLE_WORDS)


def _without(words: pl.Expr, dropped: frozenset[str]) -> pl.Expr:
    return words.list.eval(pl.element().filter(~pl.element().is_in(list(dropped))))


def _unlearnable() -> list[tuple[pl.Expr, pl.Expr, pl.Expr]]:
    """(condition, reason, detail) of the pairs a student cannot learn a fact from: a question with no
    content word of its own ("What is when it?"), an answer of function words only ("include"), an
    answer cut mid-phrase (ending on "of", "the", "besides", a comma, or an open bracket), and an answer
    whose content words the question already holds."""
    q_words, a_words = _words("question"), _words("answer")
    asked = _without(q_words, FUNCTION_WORDS | QUESTION_FRAME)
    said = _without(a_words, FUNCTION_WORDS)
    last, first = a_words.list.last(), a_words.list.first()
    a = pl.col("answer")
    unbalanced = (a.str.count_matches(r"\(") != a.str.count_matches(r"\)")) | (
        a.str.count_matches(r"\[") != a.str.count_matches(r"\]")
    )
    joins = first.is_in(["and", "or", "but", "nor", "which", "whose", "whom"]) & (a_words.list.len() > 1)
    cut = (
        pl.when(a.str.contains(_OPEN_END))
        .then(pl.format("answer ends open: '{}'", a.str.slice(-12)))
        .when(last.is_in(_DANGLING))
        .then(pl.format("answer ends on '{}'", last))
        .when(joins)
        .then(pl.format("answer starts on '{}'", first))
        .when(unbalanced)
        .then(pl.lit("answer has an unbalanced bracket"))
    )
    return [
        (asked.list.len() == 0, pl.lit("no_content_word"), pl.format("question words: {}", q_words.list.join(" "))),
        (said.list.len() == 0, pl.lit("function_word_answer"), pl.format("answer words: {}", a_words.list.join(" "))),
        (cut.is_not_null(), pl.lit("cut_mid_phrase"), cut),
        (
            said.list.set_difference(_without(q_words, QUESTION_FRAME)).list.len() == 0,
            pl.lit("answer_in_question"),
            pl.format("answer words in the question: {}", said.list.join(" ")),
        ),
    ]


def _screen(outputs: pl.DataFrame, inputs: pl.DataFrame, cfg: FilterConfig, first_row: int) -> pl.DataFrame:
    """Parse, scrub and apply the per-pair rules to one block of responses."""
    pairs = explode_pairs(outputs, inputs)
    q, a = pl.col("question"), pl.col("answer")
    pairs = pairs.with_row_index("row", offset=first_row).with_columns(
        _scrub("question").alias("q2"), _scrub("answer").alias("a2")
    )
    pairs = pairs.with_columns(
        ((q != pl.col("q2")) | (a != pl.col("a2"))).fill_null(False).alias("pii_scrubbed"),
        pl.col("q2").alias("question"),
        pl.col("a2").alias("answer"),
    ).drop("q2", "a2")
    pairs = pairs.with_columns(
        grounding=grounding(pairs, inputs),
        pair_id=pl.Series(
            [
                content_id(r, i, qq, aa) if i is not None else content_id(r, "unparseable")
                for r, i, qq, aa in pairs.select("request_id", "pair_index", "question", "answer").iter_rows()
            ],
            dtype=pl.String,
        ),
    )
    qlen, alen = q.str.len_chars(), a.str.len_chars()
    sizes = pl.format("question {} chars, answer {} chars", qlen, alen)
    refusal = pl.concat_str([a, q], separator=" ").str.extract(f"({REFUSAL})", 1)
    rules = [
        (pl.col("reject_reason").is_not_null(), pl.col("reject_reason"), pl.col("reject_detail")),
        ((qlen < cfg.min_question_chars) | (alen < cfg.min_answer_chars), pl.lit("too_short"), sizes),
        ((qlen > cfg.max_question_chars) | (alen > cfg.max_answer_chars), pl.lit("too_long"), sizes),
        (refusal.is_not_null(), pl.lit("refusal"), refusal),
        *_unlearnable(),
        (
            pl.col("grounding") < cfg.min_grounding,
            pl.lit("ungrounded"),
            pl.format("{} of answer words in passage", pl.col("grounding").round(2)),
        ),
    ]
    reason = pl.when(rules[0][0]).then(rules[0][1])
    detail = pl.when(rules[0][0]).then(rules[0][2])
    for cond, why, what in rules[1:]:
        reason, detail = reason.when(cond).then(why), detail.when(cond).then(what)
    # The exact-duplicate key travels as a 64-bit hash of the normalised text, not the text.
    key = pl.concat_str([normalised_text("question"), normalised_text("answer")], separator="\x1f").hash()
    return pairs.with_columns(
        reason.otherwise(None).alias("reject_reason"), detail.otherwise(None).alias("reject_detail"), key.alias("key")
    ).drop("grounding")


def _near_duplicates(alive: pl.DataFrame, cfg: FilterConfig) -> pl.DataFrame:
    """(row, first: the pair_id it repeats) of each pair whose question and answer nearly repeat an
    earlier pair's, of the same form (`kind`) and with the same answer. Two forms of one fact (a
    definition and its reverse) or clozes on two terms of one sentence share most words but ask
    different things: asking a fact several ways is the point (question_forms.py)."""
    found = []
    forms = alive.select("row", "pair_id", "question", "answer", pl.col("kind").fill_null("").alias("form"))
    for form in forms.partition_by("form", maintain_order=True, include_key=False):
        match = near_duplicates(form.select(pl.concat_str(["question", "answer"], separator=" "))[:, 0], cfg.minhash)
        hits = pl.Series(match)
        near = form.filter(hits >= 0)
        earlier = form[hits.filter(hits >= 0)]
        words = [frame["answer"].str.to_lowercase().str.extract_all(WORDS).list.unique() for frame in (near, earlier)]
        overlap = (
            words[0].list.set_intersection(words[1]).list.len() / words[0].list.set_union(words[1]).list.len()
        ).fill_nan(1.0)
        found.append(near.select("row", earlier["pair_id"].alias("first")).filter(overlap >= cfg.min_answer_overlap))
    return pl.concat(found) if found else pl.DataFrame(schema={"row": alive.schema["row"], "first": pl.String})


def filter_pairs(
    outputs: pl.DataFrame, inputs: pl.DataFrame, cfg: FilterConfig = FilterConfig(), block: int = 4096
) -> pl.DataFrame:
    """Screen responses `block` at a time (bounded working memory), then drop exact and near
    duplicates across the whole partition: the first occurrence in request order is kept."""
    blocks, first_row = [], 0
    for start in range(0, outputs.height, block):
        screened = _screen(outputs.slice(start, block), inputs, cfg, first_row)
        first_row += screened.height
        blocks.append(screened)
    if not blocks or first_row == 0:
        return schemas.empty(schemas.FILTERED_PAIRS)
    pairs = pl.concat(blocks)
    del blocks

    alive = pairs.filter(pl.col("reject_reason").is_null()).select(
        "row", "pair_id", "key", pl.col("pair_id").first().over("key").alias("first")
    )
    exact = alive.filter(pl.col("pair_id") != pl.col("first"))
    alive = alive.filter(pl.col("pair_id") == pl.col("first"))
    near = _near_duplicates(pairs.join(alive.select("row"), on="row", how="semi", maintain_order="left"), cfg)
    verdicts = pl.concat(
        [
            exact.select(
                "row", pl.lit("exact_duplicate").alias("why"), pl.format("same as pair {}", "first").alias("what")
            ),
            near.select("row", pl.lit("near_duplicate").alias("why"), pl.format("near pair {}", "first").alias("what")),
        ]
    )
    pairs = pairs.join(verdicts, on="row", how="left", maintain_order="left").with_columns(
        pl.coalesce("reject_reason", "why").alias("reject_reason"),
        pl.coalesce("reject_detail", "what").alias("reject_detail"),
    )
    pairs = pairs.join(inputs.select("request_id", "passage"), on="request_id", how="left", maintain_order="left")
    return schemas.conform(pairs, schemas.FILTERED_PAIRS)


def reason_counts(filtered: pl.DataFrame, reasons: tuple[str, ...] = REASONS) -> dict[str, int]:
    """Rows kept and dropped per reason (every reason listed, 0 when none)."""
    counts = {reason: 0 for reason in reasons}
    for reason, n in filtered.group_by("reject_reason").len().iter_rows():
        counts["kept" if reason is None else reason] = n
    counts.setdefault("kept", 0)
    return counts


def form_counts(filtered: pl.DataFrame) -> dict[str, int]:
    """Kept pairs per question form (`kind`: definition, reverse_definition, cloze, ...), most first."""
    kept = filtered.filter(pl.col("reject_reason").is_null())
    return dict(kept.group_by("kind").len().sort(["len", "kind"], descending=[True, False]).iter_rows())
