"""(model, tokenizer) in memory: a base or model folder by path or hub id (load_student), and a role of a checkpoint
(load_for_eval). A tokenizer without a chat template gets the project's, the one the config-built student
(nexa_core.train.student) is trained with."""

from __future__ import annotations

from pathlib import Path

from nexa_core.models.bases import DEFAULT_STUDENT, EMBEDDED_BASES
from nexa_core.models.checkpoint import model_roles
from nexa_core.models.device import eval_dtype

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


def load_for_eval(checkpoint_dir: str | Path, role: str, bf16_setting="auto"):
    """(model, tokenizer) of a role (model_roles: the checkpoint, the model after reading, the off-the-shelf base).
    All take the checkpoint folder's tokenizer, so they see the same prompt tokens."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    roles = model_roles(checkpoint_dir)
    if role not in roles:
        raise ValueError(f"model role {role!r}: checkpoint {checkpoint_dir} has the roles {list(roles)}")
    path, adapter = roles[role]
    model, _ = load_student(path, dtype=eval_dtype(bf16_setting))
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    return (model.to("cuda") if torch.cuda.is_available() else model), tokenizer
