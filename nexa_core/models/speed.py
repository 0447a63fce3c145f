"""How fast a model computes here, against what the machine can do: the machine by name (the CPU, its bf16 matrix
flags, its cores and torch's threads, or the GPU), its matrix-multiply rate at a model's own shapes (the roof), the
tokens a batch feeds the model (real, padding, labelled), and the FLOPs a training step or a generation computes,
counted from the model's shape. MFU is the model's FLOP/s over the roof.

FLOPs are counted on real tokens (padding is waste: the padding share says how much), 2 per multiply-add:
- the body (every weight but the embedding and the LM head): 2 x parameters per token forward;
- the LM head (hidden x vocabulary) only at the positions where it is computed: the labelled ones under this
  project's CompletionSFTTrainer on a CPU, every position under TRL's own trainer or a plain forward (KD), one
  position per prompt and one per new token in generation;
- attention: 4 x attention width x layers per (query, key) pair, causal pairs only (n(n+1)/2 for a sequence of n);
- training: the forward, the gradients of the activations (as many FLOPs again; twice for attention, whose products
  take a gradient on both sides) and of the weights that train (2 x trainable parameters per token, and the head's
  where it trains): 3x the forward for a full fine-tune."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from nexa_core.models.device import cpu_flags

PROBE_SECONDS = 0.5  # one GEMM probe: long enough for a steady rate, short beside any stage


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform says."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def cpu_text() -> str:
    """The CPU by name, whether it has bf16 matrix units, and torch's threads: what CPU figures depend on."""
    import torch

    flags = cpu_flags()
    has = {flag: "yes" if flag in flags else "no" for flag in ("amx_bf16", "avx512_bf16")}
    threads = torch.get_num_threads()
    return f"{cpu_name()}, AMX {has['amx_bf16']}, avx512_bf16 {has['avx512_bf16']}, torch threads {threads}"


def gemm_rate(m: int, k: int, n: int, bf16: bool, seconds: float = PROBE_SECONDS, device: str | None = None) -> float:
    """FLOP/s of (m x k) @ (k x n) in bf16 or fp32 on `device` (default: CUDA if present, else the CPU), run
    repeatedly for `seconds` after one untimed product."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    torch.mm(a, b)
    sync()
    start, count = time.perf_counter(), 0
    while True:
        torch.mm(a, b)
        count += 1
        if count % 8 == 0 or not device.startswith("cuda"):
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and count >= 2:
                return 2 * m * k * n * count / elapsed


@dataclass(frozen=True)
class ModelShape:
    """What a decoder-only model's FLOPs depend on, read from the model itself."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    body_parameters: int  # every weight but the input embedding and the LM head (counted by position)
    trainable_body_parameters: int
    head_trains: bool

    @classmethod
    def of(cls, model) -> ModelShape:
        core = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps it
        config = core.config
        heads = config.num_attention_heads
        head = core.get_output_embeddings().weight
        embedding = core.get_input_embeddings().weight
        outside = {id(head), id(embedding)}
        unique = {id(p): p for p in model.parameters()}
        body = [p for key, p in unique.items() if key not in outside]
        return cls(
            hidden=config.hidden_size,
            intermediate=getattr(config, "intermediate_size", 4 * config.hidden_size),
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            vocab=head.shape[0],
            body_parameters=sum(p.numel() for p in body),
            trainable_body_parameters=sum(p.numel() for p in body if p.requires_grad),
            head_trains=head.requires_grad,
        )

    def forward_gemms(self, tokens: int) -> list[tuple[str, int, int, int, int]]:
        """(name, m, k, n, how many per forward) of the GEMMs a forward pass over `tokens` runs: each layer's
        projections and MLP, then the LM head."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        width = self.heads * self.head_dim
        return [
            ("q, o projections", tokens, h, width, 2 * self.layers),
            ("k, v projections", tokens, h, kv, 2 * self.layers),
            ("MLP gate, up", tokens, h, self.intermediate, 2 * self.layers),
            ("MLP down", tokens, self.intermediate, h, self.layers),
            ("LM head", tokens, h, self.vocab, 1),
        ]

    def forward_flops(self, real: int, pairs: int, head_positions: int) -> float:
        """One forward pass: the body over `real` tokens, attention over `pairs` causal (query, key) pairs, the
        head at `head_positions`."""
        attention = 4 * self.heads * self.head_dim * self.layers * pairs
        return 2 * self.body_parameters * real + 2 * self.hidden * self.vocab * head_positions + attention

    def training_flops(self, real: int, pairs: int, head_positions: int) -> float:
        """The forward, the activations' gradients (the forward again, attention twice) and the gradients of the
        weights that train: 3x the forward for a full fine-tune."""
        forward = self.forward_flops(real, pairs, head_positions)
        attention = self.forward_flops(0, pairs, 0)
        weights = 2 * self.trainable_body_parameters * real
        head = 2 * self.hidden * self.vocab * head_positions if self.head_trains else 0
        return 2 * forward + attention + weights + head

    def generation_flops(self, prompt_tokens: list[int], new_tokens: list[int]) -> float:
        """Greedy decoding with a KV cache, per answer: the prompt through the body once (its causal pairs), the
        head once per new token, each new token but the last fed back through the body, attending to all before it."""
        total = 0.0
        for p, n in zip(prompt_tokens, new_tokens):
            fed = p + max(n - 1, 0)
            total += self.forward_flops(fed, fed * (fed + 1) // 2, n)
        return total


def batch_tokens(input_ids, attention_mask=None, position_ids=None, labels=None) -> dict:
    """What one batch feeds the model: fed (every position, padding included), real (not padding), pairs (causal
    (query, key) pairs of its sequences: a row's real tokens, or each packed sequence where position_ids restart
    at 0) and labelled (positions whose next token has a label: where a completion-only head is computed)."""
    import torch

    fed = int(input_ids.numel())
    if attention_mask is not None:
        lengths = attention_mask.detach().to("cpu").long().sum(dim=-1).flatten()
    elif position_ids is not None:  # padding-free packing: sequences restart at position 0
        lengths = torch.cat(
            [
                torch.diff(torch.cat([(row == 0).nonzero().flatten(), torch.tensor([row.numel()])]))
                for row in position_ids.detach().to("cpu").reshape(-1, position_ids.shape[-1])
            ]
        )
    else:
        lengths = torch.full((input_ids.shape[0],), input_ids.shape[-1])
    real = int(lengths.sum())
    labelled = int((labels[..., 1:] != -100).sum()) if labels is not None else real
    return {"fed": fed, "real": real, "pairs": int((lengths * (lengths + 1) // 2).sum()), "labelled": labelled}


def add_tokens(total: dict, batch: dict) -> dict:
    return {key: total.get(key, 0) + value for key, value in batch.items()}


@cache
def gemm_roof(tokens: int, hidden: int, intermediate: int, bf16: bool) -> float:
    """The roof a stage's MFU is measured against, once per process: this machine's rate for the model's
    largest body GEMM (the MLP's up projection) at the tokens of one step, in the precision it computes in."""
    return gemm_rate(max(tokens, 1), hidden, intermediate, bf16)


def speed_figures(flops: float, tokens: int, seconds: float, roof: float) -> dict:
    """What a stage's record stores: tokens/s, model FLOP/s, the roof in TFLOP/s and MFU (FLOP/s over the roof)."""
    rate = flops / seconds if seconds > 0 else 0.0
    return {
        "tokens_per_second": tokens / seconds if seconds > 0 else None,
        "model_tflops": rate / 1e12,
        "gemm_tflops": roof / 1e12,
        "mfu": rate / roof if roof > 0 else None,
    }
