"""The order a student trains in: phase after phase (pre-instruction-tuning: the QA pairs alone, then the pairs mixed
with the documents read again and the teacher's restatements), each pass in a new order with batches of similar
lengths, and the mix in the ratio the settings state."""

import polars as pl

from nexa_core.recipe import FinetuneConfig
from nexa_core.train.rows import LENGTH_WINDOW, passes, training_order


def rows(kind: str, n: int, length=lambda i: 3 + i % 7) -> list[dict]:
    return [{"kind": kind, "i": i, "input_ids": [0] * length(i), "labels": [0] * length(i)} for i in range(n)]


def test_phases_come_in_order_with_their_epochs_and_the_mix_in_its_ratio():
    qa, documents = rows("qa", 40), rows("doc", 30)
    ordered, summary = training_order([("qa", qa, 2), ("mixed", qa + documents * 2, 1.5)], batch_size=8, seed=3)
    kinds = [r["kind"] for r in ordered]
    first_mixed = len(qa) * 2
    assert kinds[:first_mixed] == ["qa"] * first_mixed  # the QA-only phase first, whole
    mixed = ordered[first_mixed:]
    assert len(mixed) == round(1.5 * (40 + 60))
    whole_pass = mixed[: 40 + 60]
    assert sum(r["kind"] == "doc" for r in whole_pass) == 60  # two passes of documents per pass of pairs
    assert [p["phase"] for p in summary] == ["qa", "mixed"] and summary[0]["rows"] == 80
    # every row of a pass once; a new order each pass; the same order for the same seed
    assert sorted(r["i"] for r in ordered[:40]) == list(range(40)) != [r["i"] for r in ordered[40:80]]
    assert ordered == training_order([("qa", qa, 2), ("mixed", qa + documents * 2, 1.5)], 8, 3)[0]
    assert training_order([("qa", qa, 0), ("mixed", qa, 1)], 8, 3)[1][0]["phase"] == "mixed"  # 0 epochs: no phase


def test_a_pass_batches_rows_of_similar_length():
    many = rows("qa", LENGTH_WINDOW * 8 * 2, length=lambda i: 1 + (i * 37) % 97)
    ordered = passes(many, 1, batch_size=8, seed="s")
    batches = [ordered[i : i + 8] for i in range(0, len(ordered), 8)]
    assert all(
        [len(r["input_ids"]) for r in b] == sorted((len(r["input_ids"]) for r in b), reverse=True) for b in batches
    )
    spread = sum(max(len(r["input_ids"]) for r in b) - min(len(r["input_ids"]) for r in b) for b in batches)
    assert spread / len(batches) < 10  # lengths run from 1 to 97: a random batch spreads over ~80


def test_sft_trains_the_phases_it_is_given(tmp_path):
    from nexa_core.train.trainer import train

    messages = lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]  # noqa: E731
    pairs = [messages(f"What is fact {i}?", f"It is {i} meters.") for i in range(16)]
    splits = {
        "train": pl.DataFrame({"messages": pairs[:12]}),
        "validation": pl.DataFrame({"messages": pairs[12:]}),
        "test": pl.DataFrame({"messages": pairs[12:]}),
    }
    settings = FinetuneConfig.load(
        overrides={
            "base_model": "nexa-tiny-llama",
            "qa_first_epochs": 1,
            "num_train_epochs": 2,
            "replay_documents": 1,
            "packing": False,
            "per_device_train_batch_size": 4,
            "save_steps": 1000,
            "min_train_examples": 1,
        }
    )
    documents = ["Fact three is three meters long.", "Fact seven is seven meters long."]
    record = train(settings, splits, tmp_path, "physics", log=lambda m: None, documents=documents)
    qa_phase, mixed = record["schedule"]
    assert qa_phase == {"phase": "qa", "epochs": 1, "rows": 12, "tokens": qa_phase["tokens"]}
    assert mixed["phase"] == "mixed" and mixed["rows"] == 2 * (12 + record["replayed_rows"])
    assert record["steps"] == -(-(12 + mixed["rows"]) // 4)  # one sequential pass over the ordered rows
