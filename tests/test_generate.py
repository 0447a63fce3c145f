"""nexa_core.evaluate.generate on CPU: a tiny checkpoint trained without Dagster answers the test split,
as the student and as its base, through the functions and through the CLI; merged passes give the tokens of
batch-by-batch generation; the answer cache gives back a base's answers (and suite items) only for the same model,
items and settings."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from nexa_core.artifacts import MANIFEST
from nexa_core.evaluate.answer_cache import AnswerCache
from nexa_core.evaluate.benchmark import load_suites, run_benchmark
from nexa_core.evaluate.decoding import can_merge
from nexa_core.evaluate.generate import answer, generate_answers, main
from nexa_core.models.checkpoint import CheckpointError, resolve_checkpoint, verify_checkpoint
from nexa_core.models.load import load_for_eval
from nexa_core.recipe import BenchmarkConfig, FinetuneConfig, GenerateConfig
from nexa_core.schemas import SFT_DATASET
from nexa_core.stage import ERROR_FILE, GenerateRequest
from nexa_core.train.rows import read_sft
from nexa_core.train.trainer import train

PROJECT = Path(__file__).resolve().parents[1]


def sft_frame(train_rows: int = 40, test_rows: int = 8) -> pl.DataFrame:
    def example(i: int, split: str) -> dict:
        a, b = i % 9 + 1, i // 9 + 2
        return dict.fromkeys(SFT_DATASET) | {  # columns other stages add stay null
            "domain": "physics",
            "example_id": f"ex{i}",
            "pair_id": f"p{i}",
            "doc_id": f"d{i % 5}",
            "topic": ["mechanics", "optics"][i % 2],
            "split": split,
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Briefly, " * (i % 3) + f"what is {a} times {b}?"},  # lengths vary
                {"role": "assistant", "content": f"{a} times {b} is {a * b}."},
            ],
        }

    rows = [example(i, "train") for i in range(train_rows)]
    rows += [example(i, "test") for i in range(train_rows, train_rows + test_rows)]
    return pl.DataFrame(rows, schema=SFT_DATASET)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    sft_frame().write_delta(str(root / "sft"))
    # a high learning rate so six steps already move the answers away from the base model's
    config = FinetuneConfig.load(
        overrides={
            "max_steps": 6,
            "save_steps": 100,
            "per_device_train_batch_size": 4,
            "learning_rate": 0.01,
            "finetune": "lora",
            "base_model": "nexa-tiny-llama",
        }
    )
    train(config, read_sft(str(root / "sft"), 0, "physics"), root / "run", "physics", log=lambda m: None)
    return {"root": root, "sft": str(root / "sft"), "adapter": root / "run" / "adapter"}


def test_answers_are_deterministic_and_batching_does_not_change_them(trained):
    model, tokenizer = load_for_eval(trained["adapter"], "student")
    conversations = read_sft(trained["sft"], 0, "physics")["test"]["messages"].to_list()
    config = GenerateConfig.load(overrides={"max_new_tokens": 12, "batch_size": 3})
    first = generate_answers(model, tokenizer, conversations, config)
    assert first == generate_answers(model, tokenizer, conversations, config)
    assert len(first) == len(conversations)
    assert all(0 < a["new_tokens"] <= 12 and a["prompt_tokens"] > 0 and isinstance(a["prediction"], str) for a in first)
    # left padding: a prompt answered alone or beside longer ones gets the same answer
    assert len({a["prompt_tokens"] for a in first}) > 1
    alone = generate_answers(model, tokenizer, conversations, config.replace(batch_size=1))
    assert [a["prompt_tokens"] for a in alone] == [a["prompt_tokens"] for a in first]
    assert [a["prediction"] for a in alone] == [a["prediction"] for a in first]
    # a static KV cache (the GPU setting: fixed shapes that transformers compiles) changes no answer
    static = generate_answers(model, tokenizer, conversations, config.replace(cache_implementation="static"))
    assert [a["prediction"] for a in static] == [a["prediction"] for a in first]


def test_student_and_base_are_different_models_on_the_same_tokens(trained):
    import torch

    student, student_tokenizer = load_for_eval(trained["adapter"], "student")
    base, base_tokenizer = load_for_eval(trained["adapter"], "base")
    assert hasattr(student, "peft_config") and not hasattr(base, "peft_config")
    prompt = [{"role": "user", "content": "What is 3 times 4?"}]
    ids = student_tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    assert torch.equal(
        ids["input_ids"],
        base_tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True, return_tensors="pt")[
            "input_ids"
        ],
    )
    with torch.inference_mode():
        assert not torch.allclose(student(**ids).logits, base(**ids).logits)


def test_a_full_fine_tune_is_the_student_and_the_model_it_started_from_the_base(tmp_path):
    import torch

    from nexa_core.models.checkpoint import resolve_checkpoint

    sft_frame().write_delta(str(tmp_path / "sft"))
    config = FinetuneConfig.load(
        overrides={"max_steps": 4, "save_steps": 100, "learning_rate": 0.01, "base_model": "nexa-tiny-llama"}
    )
    record = train(
        config, read_sft(str(tmp_path / "sft"), 0, "physics"), tmp_path / "run", "physics", log=lambda m: None
    )
    assert record["finetune"] == "full" and record["lora"] is None  # the default: all weights
    folder = tmp_path / "run" / "model"
    assert resolve_checkpoint(folder) == (str(folder), None, str(tmp_path / "run" / "base"))
    student, tokenizer = load_for_eval(folder, "student")
    base, _ = load_for_eval(folder, "base")
    assert not hasattr(student, "peft_config")
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 3 times 4?"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.inference_mode():
        assert not torch.allclose(student(**ids).logits, base(**ids).logits)


def test_cli_writes_both_roles_to_one_parquet_and_exits_cleanly(trained):
    output = trained["root"] / "eval" / "predictions.parquet"
    files = json.loads((trained["adapter"] / MANIFEST).read_text())["files"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nexa_core.evaluate.generate",
            "--adapter",
            str(trained["adapter"]),
            "--sft-uri",
            trained["sft"],
            "--sft-version",
            "0",
            "--domain",
            "physics",
            "--output",
            str(output),
            "--set",
            "max_new_tokens=12",
            "--set",
            "speed_tokens=6",
            "--expect-sha256",
            json.dumps(files),
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 16 and summary["examples"] == 8 and summary["roles"] == ["student", "base"]
    assert summary["device"] == "cpu" and summary["generation_config"]["max_new_tokens"] == 12
    assert set(summary["seconds"]) == {"student", "base"}
    assert set(summary["speed"]) == {"student", "base"} and min(summary["speed"].values()) > 0  # new tokens/s
    predictions = pl.read_parquet(output)
    assert predictions.columns == [
        "model_role",
        "example_id",
        "topic",
        "question",
        "reference",
        "prediction",
        "recitation",
        "prompt_tokens",
        "new_tokens",
    ]
    assert predictions.group_by("model_role").len().sort("model_role").rows() == [("base", 8), ("student", 8)]
    row = predictions.filter(pl.col("example_id") == "ex40").row(0, named=True)
    assert row["question"] == "Briefly, what is 5 times 6?" and row["reference"] == "5 times 6 is 30."
    assert not output.with_name(output.name + ".partial").exists() and not (output.parent / ERROR_FILE).exists()


def test_checkpoint_with_a_missing_or_tampered_file_is_refused(trained, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(trained["adapter"], adapter)
    files = json.loads((adapter / MANIFEST).read_text())["files"]
    verify_checkpoint(adapter, files)
    (adapter / "tokenizer.json").unlink()
    with (adapter / "adapter_config.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(CheckpointError, match="student_checkpoint") as caught:
        verify_checkpoint(adapter, files)
    assert str(adapter) in str(caught.value)
    assert "missing files ['tokenizer.json']" in str(caught.value)
    assert "sha256 differs ['adapter_config.json']" in str(caught.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        verify_checkpoint(tmp_path / "gone", files)


def test_empty_test_split_is_an_error_naming_the_partition(trained, tmp_path):
    output = tmp_path / "eval" / "predictions.parquet"
    with pytest.raises(ValueError, match="partition chemistry: the SFT test split at version 0 is empty"):
        main(
            [
                "--adapter",
                str(trained["adapter"]),
                "--sft-uri",
                trained["sft"],
                "--sft-version",
                "0",
                "--domain",
                "chemistry",
                "--output",
                str(output),
            ]
        )
    assert "partition chemistry" in (output.parent / ERROR_FILE).read_text()
    assert not output.exists()


def test_merged_passes_give_every_row_the_scores_of_its_own_batch(trained):
    """Bit for bit: each step's scores of each row of a merged pass are model.generate's on the row's own batch, for
    batches padded to different widths, with rows leaving the pass as their answers end; so are the answers."""
    import collections

    import torch
    from transformers import GenerationConfig

    from nexa_core.evaluate.decoding import merged_tokens
    from nexa_core.evaluate.generate import stop_token_ids
    from nexa_core.train.rows import prompt_turns

    model, tokenizer = load_for_eval(trained["adapter"], "base", bf16_setting=True)
    torch.manual_seed(0)
    with torch.no_grad():  # weights far from uniform: answers vary by prompt (the tiny base repeats one token)
        for weight in model.parameters():
            weight.normal_(0, 0.2)
    train_split = read_sft(trained["sft"], 0, "physics")["train"]["messages"].to_list()
    conversations = [train_split[i] for i in (0, 3, 6, 9, 1, 4, 0, 7, 2, 5, 8, 11, 12, 13, 14, 16)]  # 3 widths
    config = GenerateConfig.load(overrides={"max_new_tokens": 12, "batch_size": 4})
    contains = collections.Counter()  # a stop token about half the answers hold: they end at different steps
    for a in generate_answers(model, tokenizer, conversations, config, fast=False):
        contains.update(set(tokenizer(a["prediction"], add_special_tokens=False)["input_ids"]))
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, min(contains, key=lambda t: abs(contains[t] - 8))]
    assert can_merge(model, config)  # the path under test is the one taken

    stops, tokenizer.padding_side = stop_token_ids(model, tokenizer), "left"
    batches = [
        tokenizer.apply_chat_template(
            [prompt_turns(c) for c in conversations[i : i + 4]],
            add_generation_prompt=True,
            return_dict=True,
            padding=True,
            return_tensors="pt",
        )
        for i in range(0, 16, 4)
    ]
    assert len({b["input_ids"].shape[1] for b in batches}) == 3
    own = GenerationConfig(
        max_new_tokens=12, pad_token_id=tokenizer.pad_token_id, eos_token_id=stops, return_dict_in_generate=True
    )
    expected, merged = {}, []
    with torch.inference_mode():
        for first, batch in zip(range(0, 16, 4), batches):
            for step, scores in enumerate(model.generate(**batch, generation_config=own, output_scores=True).scores):
                expected |= {(first + i, step): row for i, row in enumerate(scores)}
        merged_tokens(model, batches, 12, None, stops, tokenizer.pad_token_id, merged)
    compared = [
        (row, step, scores) for step, (rows, step_scores) in enumerate(merged) for row, scores in zip(rows, step_scores)
    ]
    assert len({len(rows) for rows, _ in merged}) > 2  # rows left the pass
    assert all(torch.equal(scores, expected[row, step]) for row, step, scores in compared)

    before = generate_answers(model, tokenizer, conversations, config, fast=False)
    assert len({a["new_tokens"] for a in before}) > 2
    assert generate_answers(model, tokenizer, conversations, config) == before
    fixed = config.replace(min_new_tokens=6, batch_size=3)  # stop tokens held back until the sixth
    assert generate_answers(model, tokenizer, conversations, fixed) == generate_answers(
        model, tokenizer, conversations, fixed, fast=False
    )


@pytest.fixture
def own_checkpoint(trained, tmp_path):
    """A copy of the trained checkpoint and of its base that a test may change: (adapter folder, base folder)."""
    adapter, base = tmp_path / "run" / "adapter", tmp_path / "run" / "base"
    shutil.copytree(trained["adapter"], adapter)
    shutil.copytree(resolve_checkpoint(trained["adapter"])[0], base)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(base)}))
    return adapter, base


def changed_weights(folder: Path) -> None:
    """One weight of the model in `folder` moved: another model, by its files."""
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    name = next(iter(weights))
    weights[name][0] += 1e-3
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_base_answers_are_read_back_only_for_the_same_model_items_and_settings(trained, own_checkpoint, tmp_path):
    adapter, base = own_checkpoint
    config = GenerateConfig.load(overrides={"max_new_tokens": 8})

    def run(config, sft: str = trained["sft"]) -> tuple[list, pl.DataFrame]:
        request = GenerateRequest(
            domain="physics",
            adapter=str(adapter),
            sft_uri=sft,
            sft_version=0,
            output=str(tmp_path / "eval" / "predictions.parquet"),
            roles=["student", "base"],
            answer_cache=str(tmp_path / "cache"),
        )
        summary = answer(request, config, log=lambda message: None)
        return summary["cached_roles"], pl.read_parquet(request.output)

    cached, first = run(config)
    assert cached == [] and len(list((tmp_path / "cache").glob("*.parquet"))) == 1  # the base's answers, kept
    cached, again = run(config)
    assert cached == ["base"] and again.equals(first)  # the student is always asked
    assert run(config.replace(threads=1, speed_tokens=2, progress_seconds=5))[0] == ["base"]  # change no answer
    assert run(config.replace(max_new_tokens=6))[0] == []  # other generation settings
    rows = sft_frame().to_dicts()  # other items: the same test split with one question reworded
    rows[41]["messages"][1]["content"] = "What is 2 times 2?"
    pl.DataFrame(rows, schema=SFT_DATASET).write_delta(str(tmp_path / "sft"))
    assert run(config, sft=str(tmp_path / "sft"))[0] == []
    changed_weights(base)  # another base model
    assert run(config)[0] == []
    assert run(config)[0] == ["base"]  # ... kept in its turn


def test_a_bases_suite_items_are_read_back_only_for_the_same_model_suites_and_settings(own_checkpoint, tmp_path):
    adapter, base = own_checkpoint
    suite = tmp_path / "suites" / "facts.jsonl"
    suite.parent.mkdir()
    rows = [
        {"question": "What is 3 times 4?", "choices": ["12", "7", "34"], "answer": "12"},
        {"question": "What is 2 times 5?", "choices": ["10", "25", "7"], "answer": 0},
        {"question": "What is 6 times 2?", "answer": "12"},
    ]
    suite.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cache = AnswerCache(tmp_path / "cache")
    config = BenchmarkConfig.load(overrides={"roles": ["student", "base"], "max_gen_toks": 6, "bf16": "false"})

    def run(config) -> tuple[list, pl.DataFrame]:
        items, summary = run_benchmark(
            adapter, load_suites(suite.parent, "physics"), "physics", config, lambda m: None, cache
        )
        return summary["cached_roles"], items.filter(pl.col("model_role") == "base")

    cached, first = run(config)
    assert cached == []
    cached, again = run(config.replace(confidence=0.9))  # an interval setting: no item changes
    assert cached == ["base"] and again.equals(first)
    assert run(config.replace(max_gen_toks=5))[0] == []
    suite.write_text(suite.read_text().replace("6 times 2", "6 times 3"))
    assert run(config)[0] == []
    changed_weights(base)
    assert run(config)[0] == []
