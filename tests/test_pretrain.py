"""student_base: the student reads its domain's documents before SFT (stage 1), through the launcher."""

import json
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from graph_helpers import materialize_domain, read_table
from test_train import FAST_READ, kill_after_first_checkpoint, materialize_base

from nexa_core.artifacts import sha256_files
from nexa_core.recipe import ReadingConfig
from nexa_core.train.student import build_default_student
from resources.launcher import TrainingLauncher


def base_row(delta_root) -> dict:
    return pl.read_delta(str(delta_root / "nexa" / "student_base")).row(0, named=True)


def test_default_student_reads_every_document_of_its_domain(instance, tmp_path, raw_root, delta_root):
    assert materialize_domain(instance, "physics", raw_root, delta_root).success
    result = materialize_base(instance, tmp_path, delta_root, {**FAST_READ, "max_steps": 8})
    assert result.success
    row = base_row(delta_root)
    documents = pl.read_delta(str(delta_root / "nexa" / "raw_documents")).filter(pl.col("domain") == "physics")
    assert row["built_from_config"] and row["trained"] and row["steps"] == 8
    assert (
        row["documents"] == documents.height
        and row["documents_version"] == DeltaTable(str(delta_root / "nexa" / "raw_documents")).version()
    )
    model = Path(row["model_uri"])
    assert json.loads(row["files_sha256"]) == sha256_files(model) and (model / "model.safetensors").is_file()
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["built_from_config"]  # so SFT trains all of its weights
    # the read tokens are the documents plus their sentences again, in shuffled passes
    assert row["read_tokens"] > sum(len(t.split()) for t in documents["text"].to_list())
    checks = [
        e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert [c.check_name for c in checks] == ["loss_decreased"]

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))  # trained on the corpus: its words are few tokens
    text = documents["text"][0]
    assert len(tokenizer) <= 1024 and len(tokenizer.tokenize(text)) < len(text.encode()) / 3
    again = materialize_base(instance, tmp_path, delta_root, {**FAST_READ, "max_steps": 8})
    assert again.success and base_row(delta_root)["base_id"] == row["base_id"]  # same inputs: nothing retrained
    logs = [e.message for e in instance.all_logs(again.run_id) if e.message]
    assert any("has already read the corpus" in m for m in logs)


# reading resumes through SFT's trainer: test_train's killed-training test is in the default run
@pytest.mark.heavy
def test_killed_reading_resumes_from_its_last_checkpoint(instance, tmp_path, raw_root, delta_root):
    assert materialize_domain(instance, "physics", raw_root, delta_root).success
    overrides = {**FAST_READ, "max_steps": 20, "save_steps": 4}
    asset_overrides = {"base_model": "nexa-tiny-llama", **overrides}  # the student resource's, as the asset adds it
    out_dir = Path(
        TrainingLauncher(artifact_root=str(tmp_path / "artifacts")).output_dir(
            "physics",
            read_table(delta_root, "raw_documents")[1],
            ReadingConfig.load(overrides=asset_overrides).digest(),
            stage="read",
        )
    )
    saved = kill_after_first_checkpoint(
        lambda: materialize_base(instance, tmp_path, delta_root, overrides, raise_on_error=False),
        out_dir,
        "nexa_core.train.pretrain",
    )
    assert materialize_base(instance, tmp_path, delta_root, overrides).success
    manifest = json.loads((out_dir / "model" / "manifest.json").read_text())
    assert manifest["resumed_from"].endswith(f"checkpoint-{saved}") and saved < 20 and manifest["steps"] == 20


def test_a_pretrained_base_reads_unless_told_not_to(instance, tmp_path, raw_root, delta_root):
    assert materialize_domain(instance, "physics", raw_root, delta_root).success
    real = build_default_student(
        ["a photon is a quantum of light"] * 20, tmp_path / "real", hidden_size=32, layers=1, heads=2, vocab_size=300
    )
    (real / "manifest.json").unlink()  # a model from elsewhere carries no manifest of ours
    as_it_is = {"base_model": str(real), "continued_pretraining": False}
    assert materialize_base(instance, tmp_path, delta_root, as_it_is).success
    row = base_row(delta_root)
    assert row["model_uri"] == str(real) and not row["trained"] and not row["built_from_config"] and row["steps"] == 0
    assert materialize_base(instance, tmp_path, delta_root, {"base_model": str(real), "max_steps": 3}).success
    row = base_row(delta_root)
    assert row["trained"] and row["steps"] == 3 and row["model_uri"] != str(real)
    manifest = json.loads((Path(row["model_uri"]) / "manifest.json").read_text())
    assert not manifest["built_from_config"] and manifest["base_model_path"] == str(real)  # the read role's base


def test_each_sentence_pass_reads_every_sentence_once_in_a_new_order():
    from nexa_core.teacher.question_forms import split_sentences
    from nexa_core.train.rows import SENTENCES_PER_TEXT, reading_texts

    documents = [" ".join(f"Fact number {d}{i} is about topic {d}." for i in range(5)) for d in range(4)]
    sentences = sorted(s for doc in documents for s in split_sentences(doc))
    texts = reading_texts(documents, 3, seed=1)
    assert texts[:4] == documents  # every document whole first
    passes = [" ".join(texts[4 + i * 4 : 8 + i * 4]) for i in range(3)]  # 20 sentences, 6 a text: 4 texts a pass
    assert len(texts) == 4 + 3 * -(-len(sentences) // SENTENCES_PER_TEXT)
    orders = [split_sentences(p) for p in passes]
    assert all(sorted(order) == sentences for order in orders)
    assert len({tuple(order) for order in orders}) == 3  # a new order every pass
    assert reading_texts(documents, 3, seed=1) == texts and reading_texts(documents, 3, seed=2) != texts
    assert reading_texts(documents, 0) == documents


def test_an_answer_is_spelt_with_the_tokens_of_the_sentence_it_was_read_in(tmp_path):
    from transformers import AutoTokenizer

    text = "Stimulated emission gives a second photon with the same frequency and phase."
    build_default_student([text] * 30, tmp_path / "s", hidden_size=32, layers=1, heads=2, vocab_size=400)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "s"))
    read = tokenizer(text, add_special_tokens=False)["input_ids"]
    conversation = [
        {"role": "user", "content": "Complete the statement: Stimulated emission gives ..."},
        {"role": "assistant", "content": "frequency"},
    ]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
    answer = tokenizer("frequency", add_special_tokens=False)["input_ids"]
    inside = tokenizer(" frequency", add_special_tokens=False)["input_ids"]
    assert answer == inside and rendered[-1 - len(answer) : -1] == answer  # the word as it sits inside the sentence
    assert all(t in read for t in answer)
