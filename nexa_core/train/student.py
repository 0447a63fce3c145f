"""The student model: any causal LM by local path or hub id, or the offline default built here.

The offline default is a small Llama-architecture model built from a config, with a byte-level BPE
tokenizer trained on the domain's own text and a chat template whose assistant turns are marked
with {% generation %} (so TRL can train on assistant tokens only). It is saved like any HF model,
so the loading code is the same one that serves real models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from nexa_core.artifacts import MANIFEST

DEFAULT_STUDENT = "nexa-tiny-llama"
END = "<|end|>"
SPECIAL_TOKENS = ["<|pad|>", "<|begin|>", END, "<|system|>", "<|user|>", "<|assistant|>"]

# No newline between a role token and its text: with the tokenizer's prefix space, a message's first
# word is the same token as that word inside a sentence the student read (" frequency", not "frequency"),
# so an answer is spelt the way the fact was read.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# LoRA targets by architecture; anything else gets PEFT's "all-linear".
LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # Each text between special tokens starts with a space, as a word inside a sentence does.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|begin|>",
        eos_token=END,
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
    )
    return fast


def build_default_student(
    texts: Iterable[str],
    out_dir: Path,
    seed: int = 0,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 4096,
    max_positions: int = 1024,
    intermediate_size: int | None = None,
    kv_heads: int | None = None,
) -> Path:
    """Train a tokenizer on `texts`, build a Llama from a config (small by default), save both."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or max(1, heads // 2),
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / MANIFEST).write_text(
        json.dumps(
            {"base_model": DEFAULT_STUDENT, "built_from_config": True, "config": config.to_diff_dict()}, indent=1
        )
    )
    return out_dir


def attention_implementation() -> str:
    """flash_attention_2 on CUDA when the flash-attn package is installed, else PyTorch SDPA."""
    import importlib.util

    import torch

    return "flash_attention_2" if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") else "sdpa"


def prefer_shape_free_sdpa() -> None:
    """On CUDA, keep PyTorch's SDPA off its cuDNN backend. cuDNN builds an execution plan for every new
    shape, and packed batches and generation change shape at every step: on an H100 that planning cost
    2.7 ms of CPU per attention call (forward) and 3.4 ms (backward), 40% of a training step of a 0.36B
    student. The flash and memory-efficient backends have no such cost."""
    import torch

    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)


def load_student(name_or_path: str, dtype=None, attn_implementation: str | None = None):
    """(model, tokenizer) from a local folder or a hub id (hub ids need network, or a warm cache). Weights
    load in fp32 unless `dtype` says otherwise: training keeps fp32 weights (bf16 only in autocast), and
    a folder saved in bf16 would otherwise load as bf16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nexa_core.train.bases import EMBEDDED_BASES

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            dtype=dtype or torch.float32,
            attn_implementation=attn_implementation or attention_implementation(),
        )
    except (OSError, ValueError) as exc:
        named = ", ".join([DEFAULT_STUDENT, *EMBEDDED_BASES])
        raise ValueError(
            f"base_model '{name_or_path}' could not be loaded: not a named base ({named}), not a model "
            f"folder, and not a hub id available offline ({type(exc).__name__}: {str(exc)[:200]}); set "
            f"base_model to one of those"
        ) from exc
    if model.config._attn_implementation == "sdpa":
        prefer_shape_free_sdpa()
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def lora_targets(model, requested: list[str] | str | None) -> list[str] | str:
    """The LoRA target modules: the requested ones (each must exist in the model) or the
    architecture's defaults."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if requested in (None, "auto", []):
        return LORA_TARGETS.get(model.config.model_type, "all-linear")
    if requested in ("all-linear", ["all-linear"]):
        return "all-linear"
    missing = [t for t in requested if t not in names]
    if missing:
        raise ValueError(
            f"lora.target_modules {missing} are not modules of {model.config.model_type}; "
            f"candidates: {sorted(n for n in names if 'proj' in n or 'attn' in n or 'fc' in n)[:20]}"
        )
    return list(requested)


def resolve_checkpoint(folder: str | Path) -> tuple[str, str | None, str]:
    """(model to load, adapter to apply or None, the model its training started from) for a checkpoint folder.

    A LoRA checkpoint is a PEFT adapter folder (adapter_config.json names its base). A full
    fine-tune (the default) is a complete model folder whose manifest.json names the model the training
    started from."""
    folder = Path(folder)
    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        return base, str(folder), base
    manifest = folder / MANIFEST
    if not (folder / "config.json").is_file() or not manifest.is_file():
        raise ValueError(
            f"checkpoint folder {folder} holds neither a PEFT adapter (adapter_config.json) nor a "
            f"full model with its manifest.json"
        )
    return str(folder), None, json.loads(manifest.read_text())["base_model_path"]


def read_manifest(folder: str | Path) -> dict:
    """A model folder's manifest, {} for a folder this project did not write (or a hub id)."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def model_roles(checkpoint: str | Path) -> dict[str, tuple[str, str | None]]:
    """{role: (model path or hub id, adapter folder or None)} for each role a checkpoint has."""
    model, adapter, started_from = resolve_checkpoint(checkpoint)
    roles = {"student": (model, adapter)}
    start = read_manifest(started_from)
    before_reading = start.get("base_model_path")
    if before_reading and not start.get("built_from_config") and before_reading != started_from:
        roles |= {"read": (started_from, None), "base": (before_reading, None)}
    else:
        roles["base"] = (started_from, None)
    made = {} if adapter else read_manifest(model)
    if made.get("teacher"):
        roles["teacher"] = model_roles(made["teacher"])["student"]
    if made.get("pruned_sft"):
        roles["pruned_sft"] = (made["pruned_sft"], None)
    return roles


def present_roles(checkpoint: str | Path, wanted, domain: str, log=print) -> list[str]:
    """The wanted roles the checkpoint has, in the order wanted; each one it lacks is logged, not an error."""
    present = model_roles(checkpoint)
    for role in [r for r in wanted if r not in present]:
        why = " (its base is the model it read into)" if role == "read" else ""
        log(f"partition {domain}: no {role} model for this checkpoint{why}")
    return [r for r in wanted if r in present]
