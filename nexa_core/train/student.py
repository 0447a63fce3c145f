"""The offline default student, built here: a small Llama-architecture model from a config, with a byte-level BPE
tokenizer trained on the domain's own text and the project's chat template, whose assistant turns are marked
with {% generation %} (so TRL can train on assistant tokens only). It is saved like any HF model, so the
loading code (nexa_core.models.load) is the same one that serves real models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from nexa_core.artifacts import MANIFEST
from nexa_core.models.bases import DEFAULT_STUDENT
from nexa_core.models.load import CHAT_TEMPLATE, END, SPECIAL_TOKENS


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
