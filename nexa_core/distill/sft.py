"""sft_dataset: kept pairs as chat messages, split into train/validation/test by source document.

A document's pairs all land in one split, so nothing the student is tested on was seen in training.
The split is stratified by topic (each document has one topic): within a topic with at least
`min_topic_documents` documents, the documents, ordered by a seeded hash, fill test and then
validation up to that topic's share of its pairs, and the topic always keeps at least one train
document. So every such topic is both taught and tested, and no topic lands wholly in test (which
would also leave the feedback loop, whose passages come from train documents, nothing to work on).
A topic with fewer documents is all train, unless that leaves the domain without test or validation
documents: then the missing split takes a document from the largest topics (by train documents left,
preferring one that keeps a train document), so every split still gets data once the domain has at
least three documents. The result is deterministic for a seed.

With `recite` (the default) each reply recites the passage's sentence that states the fact, then gives the
answer after "Answer:" (nexa_core.distill.recitation: the student answers from what it read); the answers and the suites
score the final answer. `recite: false` gives the bare answers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import polars as pl

from nexa_core import schemas
from nexa_core.distill.recitation import recited, source_sentence
from nexa_core.ids import content_id

HELD_OUT = ("test", "validation")  # filled in this order


@dataclass(frozen=True)
class SplitConfig:
    validation: float = 0.1
    test: float = 0.2
    seed: int = 17
    # A topic with fewer documents is all train (unless the domain would have no held-out data).
    min_topic_documents: int = 3
    system_prompt: str = "You are an expert in {domain}. Answer accurately and concisely."
    # each reply recites the passage's sentence that states the fact, then answers (nexa_core.distill.recitation)
    recite: bool = True


def _seeded(cfg: SplitConfig, key: str) -> str:
    return content_id(cfg.seed, key)


def _fill_topic(docs: list[str], doc_sizes: dict[str, int], cfg: SplitConfig, split: dict[str, str]) -> None:
    """One topic's documents (in seeded order) fill test then validation up to the topic's share of
    its pairs; the last document is always train."""
    total = sum(doc_sizes[d] for d in docs)
    targets = {"test": cfg.test * total, "validation": cfg.validation * total}
    filled = {"test": 0, "validation": 0}
    remaining = len(docs)
    for doc in docs:
        remaining -= 1
        for name in HELD_OUT:
            # A split takes a doc while under its target; keep at least one document for train.
            if filled[name] < targets[name] and remaining >= 1:
                split[doc] = name
                filled[name] += doc_sizes[doc]
                break
        else:
            split[doc] = "train"


def assign_splits(
    doc_sizes: dict[str, int], cfg: SplitConfig, doc_topics: dict[str, str] | None = None
) -> dict[str, str]:
    """doc_id -> split, stratified by topic (doc_id -> topic; without it, one topic for all).

    Topics with at least `cfg.min_topic_documents` documents are split on their own (see
    `_fill_topic`); smaller topics are train. If a held-out split with a positive share is then
    empty, it takes one train document from the topic with the most train documents left (a topic
    that keeps a train document first, then more pairs, then seeded order), as long as the domain
    keeps a train document: so with three or more documents every split gets data."""
    if not doc_sizes:
        return {}
    topics: dict[str, list[str]] = defaultdict(list)
    for doc in doc_sizes:
        topics[(doc_topics or {}).get(doc) or ""].append(doc)
    for docs in topics.values():
        docs.sort(key=lambda d: _seeded(cfg, d))
    split: dict[str, str] = {}
    for topic in sorted(topics):
        docs = topics[topic]
        if len(docs) >= max(cfg.min_topic_documents, 1):
            _fill_topic(docs, doc_sizes, cfg, split)
        else:
            split.update((d, "train") for d in docs)
    shares = {"test": cfg.test, "validation": cfg.validation}
    for name in HELD_OUT:
        if shares[name] <= 0 or name in split.values():
            continue
        train = {t: [d for d in docs if split[d] == "train"] for t, docs in topics.items()}
        if sum(len(d) for d in train.values()) < 2:  # the domain keeps a train document
            break
        topic = max(
            (t for t in train if train[t]),
            key=lambda t: (len(train[t]) >= 2, len(train[t]), sum(doc_sizes[d] for d in train[t]), _seeded(cfg, t)),
        )
        split[train[topic][0]] = name
    return split


def build_sft_dataset(filtered: pl.DataFrame, cfg: SplitConfig = SplitConfig()) -> pl.DataFrame:
    """Kept pairs as chat examples. Splits are assigned from the corpus pairs alone, so mixing in a
    feedback set (whose passages come from train documents) never moves a document between splits:
    every round is tested on the same held-out documents."""
    kept = filtered.filter(pl.col("reject_reason").is_null())
    if kept.is_empty():
        return schemas.empty(schemas.SFT_DATASET)
    corpus = kept.filter(pl.col("feedback_round").is_null())
    docs = corpus.group_by("doc_id").agg(pl.len().alias("n"), pl.col("topic").min())
    split = assign_splits(dict(zip(docs["doc_id"], docs["n"])), cfg, dict(zip(docs["doc_id"], docs["topic"])))
    # The round is the inputs' (a feedback set was mixed in), even if none of its pairs survived the filters.
    feedback_rounds = filtered["feedback_round"].drop_nulls()
    round_ = int(feedback_rounds.max()) + 1 if feedback_rounds.len() else 0
    rows = []
    for r in kept.sort("pair_id").iter_rows(named=True):
        rows.append(
            {
                "domain": r["domain"],
                "example_id": content_id(r["pair_id"], cfg.system_prompt),
                "pair_id": r["pair_id"],
                "doc_id": r["doc_id"],
                "topic": r["topic"],
                "split": split.get(r["doc_id"], "train"),  # a document known only from feedback trains
                "messages": [
                    {"role": "system", "content": cfg.system_prompt.format(domain=r["domain"])},
                    {"role": "user", "content": r["question"]},
                    {"role": "assistant", "content": reply(r, cfg)},
                ],
                "round": round_,
                "feedback_round": r["feedback_round"],
            }
        )
    return pl.DataFrame(rows, schema=schemas.SFT_DATASET)


def reply(pair: dict, cfg: SplitConfig) -> str:
    """The assistant's turn for a kept pair: its answer, after the recitation of its source sentence (cfg.recite)."""
    if not cfg.recite:
        return pair["answer"]
    return recited(source_sentence(pair["question"], pair["answer"], pair.get("passage")), pair["answer"])


def leaked_documents(sft: pl.DataFrame) -> list[str]:
    """doc_ids that appear in more than one split."""
    return sft.group_by("doc_id").agg(pl.col("split").n_unique().alias("n")).filter(pl.col("n") > 1)["doc_id"].to_list()
