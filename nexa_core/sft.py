"""sft_dataset: kept pairs as chat messages, split into train/validation/test by source document.

A document's pairs all land in one split, so nothing the student is tested on was seen in training.
Documents are ordered by a seeded hash and filled into splits by pair count, so the split is
deterministic for a seed and every split gets data once there are at least three documents.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from nexa_core import schemas
from nexa_core.ids import content_id

SPLITS = ("train", "validation", "test")
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class SplitConfig:
    validation: float = 0.1
    test: float = 0.1
    seed: int = 17
    system_prompt: str = "You are an expert in {domain}. Answer accurately and concisely."


def assign_splits(doc_sizes: dict[str, int], cfg: SplitConfig) -> dict[str, str]:
    """doc_id -> split. Test and validation are filled first (smallest first in seeded order) up to
    their share of pairs; the rest is train."""
    if not doc_sizes:
        return {}
    total = sum(doc_sizes.values())
    order = sorted(doc_sizes, key=lambda d: content_id(cfg.seed, d))
    targets = {"test": cfg.test * total, "validation": cfg.validation * total}
    filled = {"test": 0, "validation": 0}
    split: dict[str, str] = {}
    remaining = len(order)
    for doc in order:
        remaining -= 1
        for name in ("test", "validation"):
            # Keep at least one document for train; a split takes a doc while under its target.
            if filled[name] < targets[name] and remaining >= 1:
                split[doc] = name
                filled[name] += doc_sizes[doc]
                break
        else:
            split[doc] = "train"
    return split


def build_sft_dataset(filtered: pl.DataFrame, cfg: SplitConfig = SplitConfig()) -> pl.DataFrame:
    """Kept pairs as chat examples. Splits are assigned from the corpus pairs alone, so mixing in a
    feedback set (whose passages come from train documents) never moves a document between splits:
    every round is tested on the same held-out documents."""
    kept = filtered.filter(pl.col("reject_reason").is_null())
    if kept.is_empty():
        return schemas.empty(schemas.SFT_DATASET)
    corpus = kept.filter(pl.col("feedback_round").is_null())
    split = assign_splits(dict(corpus.group_by("doc_id").len().iter_rows()), cfg)
    # The round is the inputs' (a feedback set was mixed in), even if none of its pairs survived the filters.
    feedback_rounds = filtered["feedback_round"].drop_nulls()
    round_ = int(feedback_rounds.max()) + 1 if feedback_rounds.len() else 0
    rows = []
    for r in kept.sort("pair_id").iter_rows(named=True):
        rows.append({
            "domain": r["domain"],
            "example_id": content_id(r["pair_id"], cfg.system_prompt),
            "pair_id": r["pair_id"],
            "doc_id": r["doc_id"],
            "topic": r["topic"],
            "split": split.get(r["doc_id"], "train"),  # a document known only from feedback trains
            "messages": [
                {"role": "system", "content": cfg.system_prompt.format(domain=r["domain"])},
                {"role": "user", "content": r["question"]},
                {"role": "assistant", "content": r["answer"]},
            ],
            "round": round_,
            "feedback_round": r["feedback_round"],
        })
    return pl.DataFrame(rows, schema=schemas.SFT_DATASET)


def leaked_documents(sft: pl.DataFrame) -> list[str]:
    """doc_ids that appear in more than one split."""
    return sft.group_by("doc_id").agg(pl.col("split").n_unique().alias("n")).filter(pl.col("n") > 1)["doc_id"].to_list()
