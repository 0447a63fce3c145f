"""feedback_set: what a round's evaluation found weak, turned into new teacher inputs aimed at it.

Weak topics are those whose student score is below a threshold (or among the k weakest); failed
items are test questions the student scored below an item threshold. New requests ask the teacher
for more pairs from passages of each weak topic, taken from TRAIN documents only: a passage of a
failed test item would leak the test split into training. Every row says why it is there. The rows
of earlier feedback sets are carried forward, so each round's SFT set keeps what earlier rounds added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from nexa_core import metric_registry, schemas
from nexa_core.distill.prompts import PromptTemplate
from nexa_core.ids import content_id


@dataclass(frozen=True)
class FeedbackConfig:
    threshold: float = 0.5  # a topic whose mean primary score is below this is weak
    bottom_k: int = 0  # the k weakest topics are weak too, whatever their score
    item_threshold: float = 0.5  # an item scoring below this failed
    max_passages_per_topic: int = 8
    max_pairs: int = 8  # asked per passage, beside the questions the SFT set already has for it


def primary_metric(scores: pl.DataFrame) -> str:
    """The test split's first primary metric (nexa_core.metric_registry) anything was scored on: the judge's
    rubric score when the judge scored anything, else token F1 (the last, always scored)."""
    *preferred, fallback = metric_registry.primary(metric_registry.TEST)
    return next((m for m in preferred if m in scores.columns and scores[m].is_not_null().any()), fallback)


def topic_scores(scores: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Mean of the metric per topic, unscored items (an unparseable judgement) left out, not zeroed."""
    return (
        scores.group_by("topic")
        .agg(pl.col(metric).mean().alias("score"), pl.col(metric).count().alias("n"))
        .filter(pl.col("n") > 0)
        .sort("score", "topic")
    )


def weak_topics(per_topic: pl.DataFrame, metric: str, cfg: FeedbackConfig) -> dict[str, str]:
    """topic -> why it is weak."""
    weak = {}
    for rank, (topic, score, _) in enumerate(per_topic.iter_rows()):
        if score < cfg.threshold:
            weak[topic] = f"topic '{topic}': mean {metric} {score:.3f} is below the threshold {cfg.threshold}"
        elif rank < cfg.bottom_k:
            weak[topic] = f"topic '{topic}': mean {metric} {score:.3f} is among the {cfg.bottom_k} weakest"
    return weak


def failed_items(scores: pl.DataFrame, metric: str, cfg: FeedbackConfig) -> pl.DataFrame:
    return scores.filter(pl.col(metric) < cfg.item_threshold).select("example_id", "topic", "question", metric)


def build_feedback_set(
    scores: pl.DataFrame,
    corpus_inputs: pl.DataFrame,
    train_docs: set[str],
    known_questions: dict[str, list[str]],
    previous: pl.DataFrame,
    template: PromptTemplate,
    round_: int,
    cfg: FeedbackConfig = FeedbackConfig(),
) -> tuple[pl.DataFrame, dict]:
    """(feedback set, summary) from the student's scores on one checkpoint's test split.

    `corpus_inputs` are the domain's corpus teacher inputs (their passages), `train_docs` the doc ids
    of the SFT train split, `known_questions` the questions the SFT set already has per passage_id
    (the prompt asks for different ones), `previous` the feedback set so far (maybe empty)."""
    metric = primary_metric(scores)
    per_topic = topic_scores(scores, metric)
    weak = weak_topics(per_topic, metric, cfg)
    failed = failed_items(scores, metric, cfg)
    failed_by_topic = {t: ids for t, ids in failed.group_by("topic").agg(pl.col("example_id").sort()).iter_rows()}
    score_of = dict(per_topic.select("topic", "score").iter_rows())
    passages = (
        corpus_inputs.filter(pl.col("doc_id").is_in(list(train_docs)) & pl.col("topic").is_in(list(weak)))
        .unique("passage_id", keep="first")
        .with_columns(
            pl.col("passage_id").map_elements(lambda p: content_id(round_, p), return_dtype=pl.String).alias("order")
        )
        .sort("topic", "order")
    )
    rows, without_passages = [], []
    for topic in sorted(weak):
        chosen = passages.filter(pl.col("topic") == topic).head(cfg.max_passages_per_topic)
        if chosen.is_empty():
            without_passages.append(topic)
        for p in chosen.iter_rows(named=True):
            known = sorted(known_questions.get(p["passage_id"], []))
            messages = template.render(
                domain=p["domain"],
                topic=topic,
                passage=p["passage"],
                max_pairs=cfg.max_pairs,
                score=f"{score_of[topic]:.2f}",
                metric=metric,
                known_questions="\n".join(f"- {q}" for q in known) or "(none)",
            )
            rows.append(
                {
                    **{k: p[k] for k in ("domain", "doc_id", "passage_id", "topic", "source_path", "passage")},
                    "request_id": template.request_id(messages),
                    "template_name": template.name,
                    "template_hash": template.sha256,
                    "messages": json.dumps(messages, ensure_ascii=False),
                    "feedback_round": round_,
                    "max_pairs": cfg.max_pairs,
                    "known_questions": known,
                    "round": round_,
                    "reason": weak[topic],
                    "metric": metric,
                    "topic_score": score_of[topic],
                    "failed_example_ids": failed_by_topic.get(topic, []),
                }
            )
    fresh = pl.DataFrame(rows, schema=schemas.FEEDBACK_SET) if rows else schemas.empty(schemas.FEEDBACK_SET)
    carried = (
        (
            schemas.conform(previous, schemas.FEEDBACK_SET)
            .filter(pl.col("round") < round_)
            .join(fresh.select("request_id"), on="request_id", how="anti")
        )
        if previous.height
        else schemas.empty(schemas.FEEDBACK_SET)
    )
    summary = {
        "metric": metric,
        "round": round_,
        "new_requests": fresh.height,
        "carried_requests": carried.height,
        "weak_topics": {t: round(score_of[t], 4) for t in sorted(weak)},
        "topic_scores": {t: round(s, 4) for t, s in score_of.items()},
        "failed_items": failed.height,
        "failed_examples": failed["example_id"].head(20).to_list(),
        "weak_topics_without_train_passages": without_passages,
    }
    return pl.concat([fresh, carried]), summary


def next_round_blocker(
    round_: int,
    new_requests: int,
    score: float | None,
    previous_score: float | None,
    max_rounds: int,
    min_improvement: float = 0.0,
) -> str | None:
    """Why the loop stops after evaluating `round_` (None: go on to round_ + 1). Round 0 is the
    corpus alone; max_rounds counts the feedback rounds after it."""
    if new_requests == 0:
        return f"round {round_}: the feedback set is empty (no weak topic with train passages)"
    if round_ + 1 > max_rounds:
        return f"round {round_ + 1} would pass max_rounds={max_rounds}"
    if previous_score is not None and score is not None and score - previous_score <= min_improvement:
        return (
            f"round {round_}: no improvement over round {round_ - 1} "
            f"({score:.4f} vs {previous_score:.4f}, min_improvement={min_improvement})"
        )
    return None


def known_questions(filtered_pairs: pl.DataFrame) -> dict[str, list[str]]:
    """passage_id -> the questions of its kept pairs: what a feedback request asks the teacher to avoid."""
    kept = filtered_pairs.filter(pl.col("reject_reason").is_null())
    return dict(kept.group_by("passage_id").agg("question").iter_rows())
