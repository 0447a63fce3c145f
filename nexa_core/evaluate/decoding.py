"""Greedy answers of several batches in one pass, each row given the tokens its own batch gives it.

nexa_core.evaluate.generate answers in batches of `batch_size` prompts, each left-padded to its longest prompt, and a
prompt's greedy answer depends, in the last bits, on that padding: attention sums over the padded length. Merging
batches into fewer, fuller passes would therefore move some answers. Here the batches of one pass share every matrix
product (one product for all their rows: the weights are read once per step for all of them) and keep their own
attention: each batch's rows attend over their own keys only (the extra left padding that merging adds is cut off
first), under the mask their batch alone would have had. A row whose answer has ended leaves the pass.

That gives each row the tokens of batch-by-batch `model.generate` where a product's row does not depend on how many
rows, or how many threads, compute it: true of bf16 on this project's CPUs, not of fp32 products of 1 to 3 rows
(docs/speed.md). `exact_regrouping` checks the loaded model's own layers before any pass is merged.
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import cache

from nexa_core.models.device import torch_threads

GROUPED = "nexa_grouped_sdpa"  # the attention implementation a merged pass runs under
ROWS_PER_PASS = 64  # rows decoded together; on 2 EPYC cores the cost per row flattens out by 32-64
PROBE_ROWS = (1, 2, 3, 4, 5, 7, 8, 9, 11, 15, 16, 17, 31, 32, 33, 63)  # small products, where kernels change
PREFILL_PROBE = 256  # rows of one prompt-sized product, for layers up to PREFILL_PROBE_WEIGHTS weights
PREFILL_PROBE_WEIGHTS = 1 << 22
# generation settings whose logits processing a merged pass does not repeat; a model whose own generation config
# sets one of them answers through model.generate
OTHER_PROCESSING = (
    "bad_words_ids",
    "begin_suppress_tokens",
    "encoder_no_repeat_ngram_size",
    "encoder_repetition_penalty",
    "exponential_decay_length_penalty",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "guidance_scale",
    "min_length",
    "no_repeat_ngram_size",
    "remove_invalid_values",
    "repetition_penalty",
    "sequence_bias",
    "suppress_tokens",
    "watermarking_config",
)

# [(rows of one batch, the extra left padding merging gave it, whether the batch itself is padded)] of the pass
_LAYOUT: ContextVar[list | None] = ContextVar("batch_layout", default=None)


def grouped_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention, run per batch of the pass: each batch's rows over their own keys, with their
    batch's own mask (none where the batch has no padding, as transformers leaves it out then)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layout = _LAYOUT.get()
    if layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    past = key.shape[2] - query.shape[2]
    out = query.new_zeros(query.shape[0], query.shape[2], query.shape[1], value.shape[-1])
    for rows, extra, padded in layout:
        first = max(0, extra - past)  # the merge's own padding as queries (prefill only): left out
        mask = attention_mask[rows, :, first:, extra:] if padded and attention_mask is not None else None
        out[rows, first:], _ = sdpa_attention_forward(
            module, query[rows, :, first:], key[rows, :, extra:], value[rows, :, extra:], mask, **kwargs
        )
    return out, None


@cache
def _registered() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED, grouped_attention)
    AttentionMaskInterface.register(GROUPED, sdpa_mask)
    return GROUPED


_INDEPENDENT: dict = {}  # (weight shape, precision, rows, threads) -> whether such products are independent of batch


def _rows_independent(weight, rows: int, threads: int) -> bool:
    """Whether a product with this weight, on `threads` threads, gives every row the bits it gets on one thread
    alone, among 1..rows rows (and among a prompt's worth, for the body's layers)."""
    import torch

    key = (tuple(weight.shape), weight.dtype, rows, threads)
    if key not in _INDEPENDENT:
        big = PREFILL_PROBE if weight.numel() <= PREFILL_PROBE_WEIGHTS else rows
        x = torch.randn(max(big, rows), weight.shape[1], generator=torch.Generator().manual_seed(0)).to(weight.dtype)
        sizes = sorted({m for m in PROBE_ROWS if m < rows} | {rows, big})
        with torch_threads(1):
            reference = torch.nn.functional.linear(x[:big], weight)
        with torch_threads(threads):
            _INDEPENDENT[key] = all(
                torch.equal(torch.nn.functional.linear(x[:m], weight), reference[:m]) for m in sizes
            )
    return _INDEPENDENT[key]


def exact_regrouping(model, threads: tuple[int, ...] = (), rows: int = ROWS_PER_PASS) -> bool:
    """Whether every linear layer of the model (a LoRA adapter's included) gives each row the same bits whether the
    row is computed alone or among up to `rows` rows, on one thread, on torch's threads or on any of `threads`: what
    lets merged passes, and threads fitted to the free cores, give the tokens of batch-by-batch generation on torch's
    threads. Checked on the model's own weights, once per process per layer shape, precision and thread count; on
    the CPU only (GPU libraries choose their kernels by batch size)."""
    import torch

    if model.device.type != "cpu":
        return False
    if any(type(m).__name__ == "Conv1D" for m in model.modules()):  # GPT-2's products are not nn.Linear
        return False
    weights = {(m.weight.shape, m.weight.dtype): m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)}
    counts = sorted({1, torch.get_num_threads(), *threads})
    with torch.inference_mode():
        return all(_rows_independent(w, rows, count) for w in weights.values() for count in counts)


def can_merge(model, config) -> bool:
    """Whether merged passes give this model's answers under `config` (a GenerateConfig) with the same tokens:
    greedy, one beam, no repetition penalty, the dynamic cache, SDPA attention, no logits processing of the
    model's own, and products independent of their batch (exact_regrouping)."""
    from transformers import GenerationConfig

    plain = GenerationConfig()
    return (
        not config.do_sample
        and config.num_beams == 1
        and config.repetition_penalty == 1.0
        and config.cache_implementation is None
        and model.config._attn_implementation == "sdpa"
        and all(getattr(model.generation_config, n, None) == getattr(plain, n, None) for n in OTHER_PROCESSING)
        and exact_regrouping(model)
    )


def _left_padded(tensor, width: int, value: int):
    import torch

    return torch.nn.functional.pad(tensor, (width - tensor.shape[1], 0), value=value)


def merged_tokens(
    model,
    batches: list,
    max_new_tokens: int,
    min_new_tokens: int | None,
    stops: list[int],
    pad: int,
    scores: list | None = None,
):
    """The new tokens of every row of `batches` (each tokenised and left-padded: input_ids, attention_mask), in order,
    decoded greedily in one pass; a row's tokens end with its first stop token, or at max_new_tokens. `scores`, when
    given, receives each step's (rows, their scores) to be checked against model.generate's."""
    import torch
    from transformers import DynamicCache

    width = max(b["input_ids"].shape[1] for b in batches)
    ids = torch.cat([_left_padded(b["input_ids"], width, pad) for b in batches])
    mask = torch.cat([_left_padded(b["attention_mask"], width, 0) for b in batches])
    extra = [width - b["input_ids"].shape[1] for b in batches]
    padded = [bool((b["attention_mask"] == 0).any()) for b in batches]
    batch_of = torch.cat([torch.full((len(b["input_ids"]),), i) for i, b in enumerate(batches)])
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as model.generate counts them
    rows = torch.arange(len(ids))  # each live row's place in `batches`
    live = torch.ones(len(ids), dtype=torch.bool)
    stop_ids = torch.tensor(stops)
    tokens: list[list[int]] = [[] for _ in range(len(ids))]
    cache_ = DynamicCache(config=model.config)
    step_input = ids
    before = model.config._attn_implementation
    model.set_attn_implementation(_registered())
    try:
        for step in range(max_new_tokens):
            found, counts = torch.unique_consecutive(batch_of, return_counts=True)
            starts = [0, *counts.cumsum(0).tolist()]
            layout = [(slice(a, b), extra[i], padded[i]) for i, a, b in zip(found.tolist(), starts, starts[1:])]
            token = _LAYOUT.set(layout)
            try:
                out = model(
                    input_ids=step_input,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache_,
                    use_cache=True,
                    logits_to_keep=1,
                )
            finally:
                _LAYOUT.reset(token)
            logits = out.logits[:, -1].float()
            if min_new_tokens and step < min_new_tokens:
                logits[:, stop_ids] = -float("inf")  # as transformers' MinNewTokensLengthLogitsProcessor
            if scores is not None:
                scores.append((rows[live].tolist(), logits[live]))
            chosen = logits.argmax(-1)
            for row, new, alive in zip(rows.tolist(), chosen.tolist(), live.tolist()):
                if alive:
                    tokens[row].append(new)
            live &= ~torch.isin(chosen, stop_ids)
            if not live.any():
                break
            if 4 * int((~live).sum()) >= len(live):  # a quarter of the pass has ended: drop those rows
                keep = live.nonzero().squeeze(1)
                for layer in cache_.layers:
                    layer.batch_select_indices(keep)
                rows, live, batch_of, mask, positions, chosen = (
                    t[keep] for t in (rows, live, batch_of, mask, positions, chosen)
                )
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=-1)
            positions = positions[:, -1:] + 1
            step_input = chosen[:, None]
    finally:
        model.set_attn_implementation(before)
    return tokens
