import polars as pl

from nexa_core import schemas
from nexa_core.data.quality import sft_dataset_suite
from nexa_core.distill.sft import SplitConfig, build_sft_dataset, leaked_documents


def filtered(n_docs=12, per_doc=5):
    rows = []
    for d in range(n_docs):
        for p in range(per_doc):
            rows.append(
                {
                    "domain": "biology",
                    "pair_id": f"p{d}-{p}",
                    "request_id": "r",
                    "doc_id": f"doc{d}",
                    "passage_id": "x",
                    "topic": "cells",
                    "source_path": "s",
                    "kind": "fact",
                    "question": f"Question {d} {p}?",
                    "answer": f"Answer {d} {p}",
                    "passage": "",
                    "pii_scrubbed": False,
                    "reject_reason": None,
                    "reject_detail": None,
                }
            )
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
    leaked = pl.concat(
        [
            sft,
            sft.head(1).with_columns(
                pl.lit("test" if sft["split"][0] != "test" else "train").alias("split"),
                pl.lit("new").alias("example_id"),
            ),
        ]
    )
    result = sft_dataset_suite(leaked)
    assert not result.passed and result.failures() == ["no_split_leakage"]
    bad_roles = sft.with_columns(
        pl.col("messages").list.eval(
            pl.struct(pl.lit("robot").alias("role"), pl.element().struct.field("content").alias("content"))
        )
    )
    assert "allowed_roles" in sft_dataset_suite(bad_roles).failures()


def test_pair_rates_fail_the_filtered_pairs_suite():
    from nexa_core.data.quality import Thresholds, filtered_pairs_suite

    pairs = filtered()
    assert filtered_pairs_suite(pairs).passed
    refusing = pairs.with_columns(
        pl.when(pl.col("doc_id").is_in(["doc0", "doc1"]))
        .then(pl.lit("refusal"))
        .otherwise(pl.col("reject_reason"))
        .alias("reject_reason")
    )
    assert filtered_pairs_suite(refusing).failures() == ["refusal_rate"]
    duplicated = pairs.with_columns(
        pl.when(pl.col("doc_id") != "doc0")
        .then(pl.lit("near_duplicate"))
        .otherwise(pl.col("reject_reason"))
        .alias("reject_reason")
    )
    assert filtered_pairs_suite(duplicated, Thresholds(max_duplicate_rate=0.5)).failures() == ["duplicate_rate"]


def test_feedback_pairs_keep_the_splits_and_number_the_round():
    base = filtered()
    before = build_sft_dataset(base)
    train_doc = before.filter(pl.col("split") == "train")["doc_id"][0]
    extra = pl.DataFrame(
        [
            {
                **base.row(0, named=True),
                "pair_id": f"fb{i}",
                "doc_id": train_doc,
                "feedback_round": 1,
                "question": f"Feedback question {i}?",
            }
            for i in range(30)
        ],
        schema=schemas.FILTERED_PAIRS,
    )
    after = build_sft_dataset(pl.concat([base, extra]))
    corpus = after.filter(pl.col("feedback_round").is_null())
    # 30 more pairs on one document would change a pair-count split; the corpus alone decides it
    assert (
        corpus.select("example_id", "split")
        .sort("example_id")
        .equals(before.select("example_id", "split").sort("example_id"))
    )
    assert (after.filter(pl.col("feedback_round") == 1)["split"] == "train").all()
    assert set(after["round"]) == {2} and set(before["round"]) == {0}


# --- topic-stratified splits -------------------------------------------------------------------


def topical(docs):
    """Corpus pairs for [(doc_id, topic, n_pairs), ...]."""
    rows = [
        {
            "domain": "biology",
            "pair_id": f"{doc}-{p}",
            "request_id": "r",
            "doc_id": doc,
            "passage_id": "x",
            "topic": topic,
            "source_path": "s",
            "kind": "fact",
            "question": f"Question {doc} {p}?",
            "answer": f"Answer {doc} {p}",
            "passage": "",
            "pii_scrubbed": False,
            "reject_reason": None,
            "reject_detail": None,
        }
        for doc, topic, n in docs
        for p in range(n)
    ]
    return pl.DataFrame(rows, schema=schemas.FILTERED_PAIRS)


def doc_splits(sft):
    """topic -> {split: set of doc_ids}."""
    out = {}
    for topic, doc, split in sft.select("topic", "doc_id", "split").unique().iter_rows():
        out.setdefault(topic, {}).setdefault(split, set()).add(doc)
    return out


# Uneven topics: one big, two small-but-enough, one single document.
MIXED = (
    [(f"cell{i}", "cells", 3 + i % 4) for i in range(10)]
    + [(f"eco{i}", "ecology", 4) for i in range(4)]
    + [(f"gen{i}", "genetics", 2 + i) for i in range(3)]
    + [("evo0", "evolution", 6)]
)


def test_every_topic_with_enough_documents_is_tested_and_keeps_train():
    # A global (unstratified) split leaves some topic without test documents for some seed, or puts
    # a whole topic in test; checking many seeds makes that failure certain, not lucky.
    for seed in range(25):
        sft = build_sft_dataset(topical(MIXED), SplitConfig(seed=seed))
        by_topic = doc_splits(sft)
        for topic in ("cells", "ecology", "genetics"):
            assert by_topic[topic].get("test"), (seed, topic, by_topic[topic])
            assert by_topic[topic].get("train"), (seed, topic, by_topic[topic])
            assert by_topic[topic].get("validation"), (seed, topic, by_topic[topic])  # >= 3 docs, 10% each
        assert by_topic["evolution"] == {"train": {"evo0"}}, seed  # a 1-document topic stays train
        assert leaked_documents(sft) == []


def test_a_topic_keeps_a_train_document_even_when_held_out_shares_are_large():
    sft = build_sft_dataset(topical(MIXED), SplitConfig(test=0.5, validation=0.5))
    for topic, splits in doc_splits(sft).items():
        assert splits.get("train"), (topic, splits)


def test_topics_below_min_topic_documents_stay_train():
    sft = build_sft_dataset(topical(MIXED), SplitConfig(min_topic_documents=5))
    by_topic = doc_splits(sft)
    assert set(by_topic["ecology"]) == {"train"} and set(by_topic["genetics"]) == {"train"}
    assert by_topic["cells"].get("test") and by_topic["cells"].get("validation") and by_topic["cells"].get("train")


def test_domain_still_gets_every_split_from_single_document_topics():
    three = [("a", "cells", 5), ("b", "ecology", 5), ("c", "genetics", 5)]
    for seed in range(10):
        sft = build_sft_dataset(topical(three), SplitConfig(seed=seed))
        docs = dict(sft.select("doc_id", "split").unique().iter_rows())
        assert sorted(docs.values()) == ["test", "train", "validation"], seed
        assert leaked_documents(sft) == []
    # Small topics only: held-out documents come from the largest topic while it keeps a train document.
    small = [("a1", "cells", 5), ("a2", "cells", 5), ("b", "ecology", 5), ("c", "genetics", 5)]
    by_topic = doc_splits(build_sft_dataset(topical(small), SplitConfig(min_topic_documents=3)))
    assert sum(len(d) for t in by_topic.values() for s, d in t.items() if s == "test") == 1
    assert sum(len(d) for t in by_topic.values() for s, d in t.items() if s == "validation") == 1
    assert by_topic["cells"].get("test")  # the first pick is from the largest topic, which keeps a train doc
    assert sum(len(t.get("train", ())) for t in by_topic.values()) == 2
    # Too few documents to hold any out: one document trains; a zero share asks for no documents.
    assert set(build_sft_dataset(topical([("a", "cells", 5)]))["split"]) == {"train"}
    no_validation = build_sft_dataset(topical(three), SplitConfig(validation=0.0))
    assert set(no_validation["split"]) == {"train", "test"}


def test_stratified_split_is_deterministic_and_seeded():
    pairs = topical(MIXED)
    sft = build_sft_dataset(pairs)
    assert sft.equals(build_sft_dataset(pairs))
    shuffled = build_sft_dataset(pairs.sample(fraction=1.0, shuffle=True, seed=3))
    assert shuffled.sort("example_id").equals(sft.sort("example_id"))  # row order does not matter
    other = build_sft_dataset(pairs, SplitConfig(seed=99))
    assert other.sort("example_id")["split"].to_list() != sft.sort("example_id")["split"].to_list()


def test_no_document_in_two_splits_and_shares_are_respected_per_topic():
    sizes = {f"{t}{i}": 2 + (i * 7 + len(t)) % 9 for t in ("cells", "ecology") for i in range(40)}
    docs = [(d, "cells" if d.startswith("cells") else "ecology", n) for d, n in sizes.items()]
    cfg = SplitConfig(validation=0.15, test=0.2)
    sft = build_sft_dataset(topical(docs), cfg)
    assert leaked_documents(sft) == []
    assert sft.height == sum(sizes.values())
    for topic in ("cells", "ecology"):
        rows = sft.filter(pl.col("topic") == topic)
        counts = dict(rows.group_by("split").len().iter_rows())
        total, biggest = rows.height, max(n for d, t, n in docs if t == topic)
        for name, share in (("test", cfg.test), ("validation", cfg.validation)):
            # filled up to the topic's share: at least the share, over by less than one document
            assert share * total <= counts[name] < share * total + biggest, (topic, name, counts)
        assert counts["train"] >= (1 - cfg.test - cfg.validation) * total - 2 * biggest


def test_feedback_pairs_do_not_move_stratified_documents():
    base = topical(MIXED)
    before = build_sft_dataset(base)
    train_doc = before.filter((pl.col("split") == "train") & (pl.col("topic") == "genetics"))["doc_id"][0]
    extra = pl.DataFrame(
        [
            {
                **base.row(0, named=True),
                "pair_id": f"fb{i}",
                "doc_id": train_doc,
                "topic": "genetics",
                "feedback_round": 1,
                "question": f"Feedback question {i}?",
            }
            for i in range(40)
        ],
        schema=schemas.FILTERED_PAIRS,
    )
    after = build_sft_dataset(pl.concat([base, extra]))
    assert (
        after.filter(pl.col("feedback_round").is_null())
        .select("example_id", "split")
        .sort("example_id")
        .equals(before.select("example_id", "split").sort("example_id"))
    )
    assert (after.filter(pl.col("feedback_round") == 1)["split"] == "train").all()
