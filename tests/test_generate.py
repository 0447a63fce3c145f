"""nexa_core.evaluate.generate on CPU: a tiny checkpoint trained without Dagster answers the test split,
as the student and as its base, through the functions and through the CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from nexa_core.artifacts import MANIFEST
from nexa_core.evaluate.generate import generate_answers, main
from nexa_core.models.checkpoint import CheckpointError, verify_checkpoint
from nexa_core.models.load import load_for_eval
from nexa_core.recipe import FinetuneConfig, GenerateConfig
from nexa_core.schemas import SFT_DATASET
from nexa_core.stage import ERROR_FILE
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
