"""Real base models train too: tiny random models of three architecture families, each saved with a
released-style chat template that has no {% generation %} markers, go through the same assets as the
default student: read (continued pretraining), SFT (LoRA), generate, benchmark."""

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from graph_helpers import materialize_domain
from test_evaluate import eval_resources

from nexa_assets import benchmark, evaluate, pretrain, train
from nexa_core.train.rows import conversation_rows
from nexa_core.train.student import train_tokenizer
from resources.teacher import TeacherResource

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
FAMILIES = {  # architecture: (chat template, its special tokens, end of turn, begin of text)
    "llama": (
        LLAMA3,
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|eot_id|>",
        "<|begin_of_text|>",
    ),
    "qwen2": (CHATML, ["<|im_start|>", "<|im_end|>"], "<|im_end|>", None),
    "gpt_neox": (CHATML, ["<|im_start|>", "<|im_end|>"], "<|im_end|>", None),
}


def released_style_model(family: str, folder: Path, texts: list[str]) -> Path:
    """A tiny random model of `family`, saved as a hub model would be: weights, tokenizer, a chat
    template without generation markers, eos = the template's end of turn."""
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig, Qwen2Config

    template, specials, end, begin = FAMILIES[family]
    tokenizer = train_tokenizer(texts, vocab_size=512)
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.eos_token, tokenizer.chat_template = end, template
    if begin:
        tokenizer.bos_token = begin
    size = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = {
        "llama": lambda: LlamaConfig(num_key_value_heads=1, **size),
        "qwen2": lambda: Qwen2Config(num_key_value_heads=1, **size),
        "gpt_neox": lambda: GPTNeoXConfig(**size),
    }[family]()
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TEXTS = ["A photon is a quantum of electromagnetic radiation.", "Entropy measures the number of microstates."] * 20


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_loss_falls_on_the_answer_and_its_end_of_turn_only(tmp_path, family):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(released_style_model(family, tmp_path / family, TEXTS)))
    assert "{% generation %}" not in tokenizer.chat_template  # TRL's assistant_only_loss could not train on it
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is a photon?"},
        {"role": "assistant", "content": "A quantum of light."},
    ]
    row = conversation_rows(tokenizer, [messages])[0]
    trained = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != -100])
    assert trained.strip().startswith("A quantum of light.") and FAMILIES[family][2] in trained
    assert "What is a photon?" not in trained and "Answer briefly." not in trained


# The whole chain for the default base's family in the default run; the other two families' templates and loss
# masks are tested above, their chains (a minute and a half each) with -m heavy
@pytest.mark.parametrize(
    "family", [f if f == "llama" else pytest.param(f, marks=pytest.mark.heavy) for f in sorted(FAMILIES)]
)
def test_a_released_style_base_goes_through_read_sft_generate_and_benchmark(instance, tmp_path, raw_root, family):
    delta = tmp_path / "delta"
    assert materialize_domain(instance, "physics", raw_root, delta).success
    texts = pl.read_delta(str(delta / "nexa" / "raw_documents"))["text"].to_list()
    base = released_style_model(family, tmp_path / family, texts)
    suites = tmp_path / "suites" / "physics"
    suites.mkdir(parents=True)
    (suites / "mini.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "question": "Which particle is a quantum of light?",
                    "choices": ["photon", "proton", "neutron", "pion"],
                    "answer": "photon",
                },
                {
                    "question": "What has no electric charge?",
                    "choices": ["electron", "neutron", "proton", "ion"],
                    "answer": "neutron",
                },
                {"question": "Name the quantum of light.", "answer": "photon"},
            ]
        )
        + "\n"
    )
    resources = eval_resources(tmp_path, TeacherResource(backend="none", model="none"))
    result = dg.materialize(
        [pretrain.student_base, train.student_checkpoint, evaluate.eval_predictions, benchmark.benchmark_scores],
        partition_key="physics",
        instance=instance,
        resources=resources,
        run_config={
            "ops": {
                "student_base": {"config": {"base_model": str(base), "continued_pretraining": True, "max_steps": 3}},
                "student_checkpoint": {"config": {"max_steps": 4, "logging_steps": 1, "finetune": "lora"}},
                "eval_predictions": {"config": {"max_new_tokens": 8}},
                "benchmark_scores": {
                    "config": {"suite_root": str(suites.parent), "n_resamples": 200, "max_gen_toks": 8}
                },
            }
        },
    )
    assert result.success
    read = lambda table: pl.read_delta(str(delta / "nexa" / table))  # noqa: E731
    student_base = read("student_base").row(0, named=True)
    assert student_base["trained"] and not student_base["built_from_config"] and student_base["steps"] == 3
    checkpoint = read("student_checkpoint").row(0, named=True)
    assert (
        checkpoint["finetune"] == "lora"
        and checkpoint["steps"] == 4
        and checkpoint["base_id"] == student_base["base_id"]
    )
    adapter = json.loads((Path(checkpoint["artifact_uri"]) / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == student_base["model_uri"]  # SFT started from what was read
    predictions = read("eval_predictions")
    # a real base that read: the student, the model after reading and the base as released
    assert set(predictions["model_role"]) == {"student", "read", "base"} and predictions.height > 0
    assert (predictions["new_tokens"] > 0).all()
    scores = read("benchmark_scores")
    assert set(scores["model_role"]) == {"student", "read", "base"} and scores.height == 9
