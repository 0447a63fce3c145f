import polars as pl

from nexa_core import schemas
from nexa_core.sft import SplitConfig, build_sft_dataset, leaked_documents
from nexa_core.quality import sft_dataset_suite


def filtered(n_docs=12, per_doc=5):
    rows = []
    for d in range(n_docs):
        for p in range(per_doc):
            rows.append({"domain": "biology", "pair_id": f"p{d}-{p}", "request_id": "r", "doc_id": f"doc{d}",
                         "passage_id": "x", "topic": "cells", "source_path": "s", "kind": "fact",
                         "question": f"Question {d} {p}?", "answer": f"Answer {d} {p}", "passage": "",
                         "pii_scrubbed": False, "reject_reason": None, "reject_detail": None})
    rows.append({**rows[0], "pair_id": "dropped", "reject_reason": "refusal"})
    return pl.DataFrame(rows, schema=schemas.FILTERED_PAIRS)


def test_split_by_document_is_deterministic_and_complete():
    sft = build_sft_dataset(filtered())
    assert sft.height == 60 and "dropped" not in sft["pair_id"].to_list()
    assert leaked_documents(sft) == []
    assert set(sft["split"]) == {"train", "validation", "test"}
    assert sft.equals(build_sft_dataset(filtered()))
    other_seed = build_sft_dataset(filtered(), SplitConfig(seed=99))
    assert other_seed["split"].to_list() != sft["split"].to_list()
    roles = sft["messages"].list.eval(pl.element().struct.field("role")).to_list()
    assert all(r == ["system", "user", "assistant"] for r in roles)


def test_quality_suite_catches_leakage_and_bad_roles():
    sft = build_sft_dataset(filtered())
    assert sft_dataset_suite(sft).passed
    leaked = pl.concat([sft, sft.head(1).with_columns(pl.lit("test" if sft["split"][0] != "test" else "train")
                                                      .alias("split"), pl.lit("new").alias("example_id"))])
    result = sft_dataset_suite(leaked)
    assert not result.passed and result.failures() == ["no_split_leakage"]
    bad_roles = sft.with_columns(pl.col("messages").list.eval(
        pl.struct(pl.lit("robot").alias("role"), pl.element().struct.field("content").alias("content"))))
    assert "allowed_roles" in sft_dataset_suite(bad_roles).failures()


def test_pair_rates_fail_the_filtered_pairs_suite():
    from nexa_core.quality import Thresholds, filtered_pairs_suite

    pairs = filtered()
    assert filtered_pairs_suite(pairs).passed
    refusing = pairs.with_columns(pl.when(pl.col("doc_id").is_in(["doc0", "doc1"])).then(pl.lit("refusal"))
                                  .otherwise(pl.col("reject_reason")).alias("reject_reason"))
    assert filtered_pairs_suite(refusing).failures() == ["refusal_rate"]
    duplicated = pairs.with_columns(pl.when(pl.col("doc_id") != "doc0").then(pl.lit("near_duplicate"))
                                    .otherwise(pl.col("reject_reason")).alias("reject_reason"))
    assert filtered_pairs_suite(duplicated, Thresholds(max_duplicate_rate=0.5)).failures() == ["duplicate_rate"]


def test_feedback_pairs_keep_the_splits_and_number_the_round():
    base = filtered()
    before = build_sft_dataset(base)
    train_doc = before.filter(pl.col("split") == "train")["doc_id"][0]
    extra = pl.DataFrame([{**base.row(0, named=True), "pair_id": f"fb{i}", "doc_id": train_doc, "feedback_round": 1,
                           "question": f"Feedback question {i}?"} for i in range(30)], schema=schemas.FILTERED_PAIRS)
    after = build_sft_dataset(pl.concat([base, extra]))
    corpus = after.filter(pl.col("feedback_round").is_null())
    # 30 more pairs on one document would change a pair-count split; the corpus alone decides it
    assert corpus.select("example_id", "split").sort("example_id").equals(
        before.select("example_id", "split").sort("example_id"))
    assert (after.filter(pl.col("feedback_round") == 1)["split"] == "train").all()
    assert set(after["round"]) == {2} and set(before["round"]) == {0}
