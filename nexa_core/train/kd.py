"""Knowledge distillation at the logit level: a smaller student (a depth-pruned copy of the teacher, or any
model with the teacher's vocabulary) learns the teacher's token distributions, read from cached top-k
log-probabilities so the teacher need not be in memory while the student trains.

The divergence is taken between the teacher's and the student's distributions coarsened to the teacher's
top-k tokens plus one bucket for the rest of the vocabulary: exact (the full divergence) when k is the
vocabulary, zero when the student is the teacher, and it charges the student for mass it puts outside the
teacher's top k. TRL's GKDTrainer computes the same divergences from a live teacher's full logits; with
cached top-k it cannot be used, hence this loss."""

from __future__ import annotations

import copy
import math
from pathlib import Path

from nexa_core.models.speed import ModelShape, add_tokens, batch_tokens, gemm_roof, speed_figures
from nexa_core.progress import Progress

KINDS = ("forward", "reverse", "jsd")


class DistillError(ValueError):
    pass


def check_vocabularies(teacher, student) -> None:
    """Logit-level distillation compares distributions over one vocabulary."""
    t, s = teacher.get_output_embeddings().weight.shape[0], student.get_output_embeddings().weight.shape[0]
    if t != s:
        raise DistillError(
            f"the student's vocabulary ({s} tokens, {student.name_or_path or type(student).__name__}) is not the "
            f"teacher's ({t} tokens, {teacher.name_or_path or type(teacher).__name__}): logit distillation needs "
            f"one vocabulary; pick a student of the teacher's family, or prune the teacher (keep_layers)"
        )


def layer_importance(model, batches: list[dict]) -> list[float]:
    """Per decoder layer, how much it changes the tokens passing through it: 1 - the cosine similarity of
    the hidden state entering and leaving it, averaged over the corpus's real tokens (the block influence
    that depth pruning ranks layers by, as in ShortGPT and Minitron). Dropping the lowest changes the
    teacher's outputs least."""
    import torch
    import torch.nn.functional as F

    totals, count = None, 0
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in batches:
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            mask = mask.bool()
            states = out.hidden_states
            change = torch.stack(
                [
                    (1 - F.cosine_similarity(states[i], states[i + 1], dim=-1))[mask].sum()
                    for i in range(len(states) - 1)
                ]
            )
            totals = change if totals is None else totals + change
            count += int(mask.sum())
    return (totals / max(count, 1)).tolist()


def layers_to_keep(
    importance: list[float], keep_layers: int | None = None, keep_ratio: float | None = None
) -> list[int]:
    """The indices of the most important layers, in model order: `keep_layers` of them, or `keep_ratio` of
    the depth (rounded, at least one)."""
    depth = len(importance)
    keep = keep_layers if keep_layers is not None else max(1, round(depth * (keep_ratio or 0.5)))
    if not 1 <= keep <= depth:
        raise DistillError(f"keep_layers {keep}: the teacher has {depth} layers; keep between 1 and {depth}")
    ranked = sorted(range(depth), key=lambda i: importance[i], reverse=True)
    return sorted(ranked[:keep])


def prune_layers(model, keep: list[int]):
    """A copy of a decoder-only model with only the layers `keep`, renumbered for the KV cache."""
    import torch

    student = copy.deepcopy(model)
    layers = student.model.layers
    student.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for index, layer in enumerate(student.model.layers):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = index
    config = student.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    return student


def top_k_logprobs(logits, k: int, temperature: float = 1.0):
    """(values, indices): the k largest log-probabilities of each position's distribution at `temperature`."""
    import torch

    return torch.log_softmax(logits.float() / temperature, dim=-1).topk(min(k, logits.shape[-1]), dim=-1)


def _with_rest(logprobs):
    """Log-probabilities of the top-k tokens plus one last entry for the rest of the vocabulary."""
    import torch

    rest = torch.log1p(-logprobs.exp().sum(-1).clamp(max=1 - 1e-6))
    return torch.cat([logprobs, rest.unsqueeze(-1)], dim=-1)


def kd_loss(
    student_logits,
    teacher_values,
    teacher_indices,
    mask,
    temperature: float = 1.0,
    kind: str = "forward",
    beta: float = 0.5,
):
    """The divergence between teacher and student at each masked position, over the teacher's top-k tokens
    plus the rest (see the module), averaged over the positions and scaled by temperature² as in Hinton
    et al. `kind`: forward KL(teacher || student), reverse KL(student || teacher), or jsd, the generalised
    Jensen-Shannon divergence with weight `beta` as TRL's GKD defines it."""
    import torch

    if kind not in KINDS:
        raise DistillError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    student = torch.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, teacher_indices)
    s, t = _with_rest(student), _with_rest(teacher_values.float())

    def kl(p, q):  # KL(p || q) from log-probabilities, per position
        return (p.exp() * (p - q)).sum(-1)

    if kind == "forward":
        per_position = kl(t, s)
    elif kind == "reverse":
        per_position = kl(s, t)
    else:
        mixture = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1 - beta)]), dim=0)
        per_position = beta * kl(t, mixture) + (1 - beta) * kl(s, mixture)
    mask = mask.bool()
    return per_position[mask].mean() * temperature**2 if mask.any() else per_position.sum() * 0


def top_k_fidelity(teacher, student, batches: list[dict], ks: list[int]) -> list[dict]:
    """What caching only the teacher's top k costs, per k, on the positions that predict an answer token: the
    teacher's probability mass its k tokens hold, and the forward KL the student is charged from them
    (kd_loss) beside the full-vocabulary KL(teacher || student)."""
    import torch

    totals = {k: {"mass": 0.0, "kl_top_k": 0.0} for k in ks}
    full, count = 0.0, 0
    device = next(teacher.parameters()).device
    with torch.no_grad():
        for batch in batches:
            ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            mask = batch.get("kd_mask", batch["attention_mask"]).to(device).bool()
            t = torch.log_softmax(teacher(input_ids=ids, attention_mask=attention).logits.float(), -1)
            s_logits = student(input_ids=ids, attention_mask=attention).logits.float()
            n = int(mask.sum())
            full += float((t.exp() * (t - torch.log_softmax(s_logits, -1))).sum(-1)[mask].sum())
            for k in ks:
                values, indices = t.topk(k, dim=-1)
                totals[k]["mass"] += float(values.exp().sum(-1)[mask].sum())
                totals[k]["kl_top_k"] += float(kd_loss(s_logits, values, indices, mask)) * n
            count += n
    return [
        {"k": k, "teacher_mass": v["mass"] / count, "kl_top_k": v["kl_top_k"] / count, "kl_full": full / count}
        for k, v in totals.items()
    ]


def distill_steps(
    student,
    batches: list[dict],
    teacher_topk: list[tuple],
    steps: int,
    learning_rate: float = 1e-4,
    alpha: float = 0.5,
    temperature: float = 1.0,
    kind: str = "forward",
    beta: float = 0.5,
    bf16: bool = False,
    log=print,
    progress=None,
) -> list[float]:
    """Train the student `steps` steps over the batches (cycled) on alpha x the KD loss against the teacher's
    cached top-k of each batch + (1 - alpha) x the ordinary next-token loss on the batch's labels; returns the
    loss of each step. The KD loss falls on the positions of `kd_mask` where a batch has one (those that
    predict an answer token), else on every real token. alpha 0 is SFT alone. `bf16`: the forward pass under
    bf16 autocast, the weights and the loss in fp32 (as SFT trains). `progress` (nexa_core/progress.py Progress)
    counts each step and its real tokens."""
    import torch

    optimizer = torch.optim.AdamW(student.parameters(), lr=learning_rate)
    device = next(student.parameters()).device
    student.train()
    losses = []
    for step in range(steps):
        batch, (values, indices) = batches[step % len(batches)], teacher_topk[step % len(batches)]
        batch = {key: tensor.to(device) for key, tensor in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        loss = (1 - alpha) * out.loss
        if alpha:
            mask = batch.get("kd_mask", batch["attention_mask"])
            distance = kd_loss(out.logits, values.to(device), indices.to(device), mask, temperature, kind, beta)
            loss = loss + alpha * distance
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        log(f"step {step + 1}: loss {losses[-1]:.4f}")
        if progress:
            progress.update(progress.done + 1, int(batch["attention_mask"].sum()))
    return losses


def kd_speed(student, batches: list[dict], steps: int, seconds: float, bf16: bool) -> dict:
    """tokens/s, model FLOP/s, MFU against this machine's GEMM rate at the student's shape, and padding share of
    `steps` steps over the batches (cycled), as distill_steps trains them: the LM head at every position (the KD
    loss reads every position's logits)."""
    tokens: dict = {}
    for step in range(steps):
        batch = batches[step % len(batches)]
        tokens = add_tokens(tokens, batch_tokens(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]))
    shape = ModelShape.of(student)
    flops = shape.training_flops(tokens["real"], tokens["pairs"], tokens["real"])
    roof = gemm_roof(round(tokens["fed"] / steps), shape.hidden, shape.intermediate, bf16)
    return {**speed_figures(flops, tokens["real"], seconds, roof), "padding_share": 1 - tokens["real"] / tokens["fed"]}


def padded(rows: list[dict], pad_id: int):
    """input_ids, attention_mask and labels of rows of token ids, right-padded to the longest."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n], mask[i, :n], labels[i, :n] = torch.tensor(row["input_ids"]), 1, torch.tensor(row["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def read_logits(uri: str, version: int, domain: str, logits_id: str, storage_options: dict | None = None) -> list[dict]:
    """One teacher's cached top-k for the domain, at a pinned Delta version, in a stable order."""
    import polars as pl

    rows = (
        pl.scan_delta(uri, version=version, storage_options=storage_options)
        .filter((pl.col("domain") == domain) & (pl.col("logits_id") == logits_id))
        .sort("example_id")
        .collect()
    )
    if rows.is_empty():
        raise ValueError(f"partition {domain}: teacher_logits v{version} has no rows of {logits_id}")
    return rows.to_dicts()


def cached_batches(rows: list[dict], size: int, pad_id: int) -> tuple[list[dict], list[tuple]]:
    """The teacher_logits rows as padded batches (with kd_mask: the positions that predict a labelled token:
    an answer's in a QA pair, every one in a document block)
    and each batch's top-k tensors."""
    import torch

    batches, topk = [], []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        batch = padded(chunk, pad_id)
        batch["kd_mask"] = torch.zeros_like(batch["labels"])
        batch["kd_mask"][:, :-1] = (batch["labels"][:, 1:] != -100).long()
        width, k = batch["input_ids"].shape[1], len(chunk[0]["token_ids"][0])
        values, indices = torch.zeros(len(chunk), width, k), torch.zeros(len(chunk), width, k, dtype=torch.long)
        for i, row in enumerate(chunk):
            n = len(row["input_ids"])
            values[i, :n], indices[i, :n] = torch.tensor(row["logprobs"]), torch.tensor(row["token_ids"])
        batches.append(batch)
        topk.append((values, indices))
    return batches, topk


SFT_ONLY = "pruned-sft"  # the same pruned copy trained on the ordinary loss alone: what KD must beat


def commit_model(model, tokenizer, folder: Path, manifest: dict) -> dict:
    """Save under `folder` with a manifest of sha256s: written beside and renamed, so only a complete
    folder ever has a manifest in place. Returns the files' sha256s."""
    from nexa_core.artifacts import commit_folder, staging_for

    staging = staging_for(folder)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return commit_folder(staging, folder, manifest)


def distill_student(request, settings, log) -> dict:
    """Rank the teacher's layers on its own inputs, keep the most important, train the pruned copy on the cached
    top-k (and, with compare_sft, the same copy on the ordinary loss alone), and commit each under output_dir
    with a manifest that names the teacher and the model the teacher started from (the scoring roles)."""
    import random
    import time

    import torch

    from nexa_core.models.checkpoint import resolve_checkpoint
    from nexa_core.models.device import device_name, precision, use_bf16
    from nexa_core.models.load import load_for_eval

    torch.manual_seed(settings.seed)
    teacher, tokenizer = load_for_eval(request.teacher, "student", "false")  # fp32 weights: they train
    if hasattr(teacher, "merge_and_unload"):  # a LoRA checkpoint: its full weights are the teacher
        teacher = teacher.merge_and_unload()
    rows = read_logits(request.logits_uri, request.logits_version, request.domain, request.logits_id)
    random.Random(settings.seed).shuffle(rows)  # QA pairs and document blocks in every batch, not in two runs
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches, topk = cached_batches(rows, settings.per_device_train_batch_size, pad_id)
    vocab = teacher.get_output_embeddings().weight.shape[0]
    if int(topk[0][1].max()) >= vocab:
        raise DistillError(f"the cached top-k names token ids up to {int(topk[0][1].max())}; the teacher has {vocab}")
    importance = layer_importance(teacher, batches[: settings.importance_batches])
    keep = layers_to_keep(importance, settings.keep_layers, settings.keep_ratio)
    log(f"partition {request.domain}: keeping layers {keep} of {len(importance)} (block influence)")
    pruned, teacher_parameters = prune_layers(teacher, keep), sum(p.numel() for p in teacher.parameters())
    del teacher
    bf16 = use_bf16(settings.bf16)
    students = {"model": (pruned, settings.alpha)}
    if settings.compare_sft:  # trained first: the KD student's manifest names it
        students = {SFT_ONLY: (copy.deepcopy(pruned), 0.0), **students}
    common = {
        "teacher": request.teacher,
        "base_model_path": resolve_checkpoint(request.teacher)[2],  # the teacher's base and read rows are its
        "kept_layers": keep,
        "teacher_layers": len(importance),
        "layer_importance": importance,
        "parameters": sum(p.numel() for p in pruned.parameters()),
        "teacher_parameters": teacher_parameters,
        "steps": settings.num_train_epochs * len(batches),
        "document_blocks": sum(r.get("source") == "document" for r in rows),
        "trained_tokens": settings.num_train_epochs * sum(len(r["input_ids"]) for r in rows),
        "precision": precision(bf16),
        "saved_dtype": "bfloat16" if bf16 else "float32",
        "device": device_name(),
        "config_hash": settings.digest(),
        "settings": settings.to_dict(),
    }
    trained = {}
    progress = Progress(settings.stage, request.domain, common["steps"] * len(students), log, settings.progress_seconds)
    for name, (student, alpha) in students.items():
        start = time.perf_counter()
        losses = distill_steps(
            student,
            batches,
            topk,
            common["steps"],
            settings.learning_rate,
            alpha,
            settings.temperature,
            settings.kind,
            settings.beta,
            bf16,
            log=lambda message, name=name: log(f"{name} {message}"),
            progress=progress,
        )
        seconds = time.perf_counter() - start
        folder = Path(request.output_dir) / name
        record = {**common, "alpha": alpha, "first_loss": losses[0], "final_loss": losses[-1], "wall_seconds": seconds}
        record |= kd_speed(student, batches, common["steps"], seconds, bf16)
        if name == "model" and SFT_ONLY in trained:
            record["pruned_sft"] = trained[SFT_ONLY]["model_path"]
        if bf16:  # it computed in bf16 and will answer in bf16: half the disk (as SFT saves)
            student.to(torch.bfloat16)
        files = commit_model(student, tokenizer, folder, record)
        trained[name] = {**record, "model_path": str(folder), "files": files, "curve": losses}
        log(f"partition {request.domain}: {name} trained {common['steps']} steps in {seconds:.0f}s")
    result = trained.pop("model")
    if SFT_ONLY in trained:
        sft = trained[SFT_ONLY]
        result["sft_only"] = {k: sft[k] for k in ("model_path", "files", "first_loss", "final_loss", "wall_seconds")}
    return result


def main(argv: list[str] | None = None) -> int:
    from nexa_core.stage import DistillRequest, serve

    request = DistillRequest.parse(argv, __doc__.splitlines()[0])
    return serve(request, lambda log: distill_student(request, request.recipe(), log))


if __name__ == "__main__":
    import sys

    sys.exit(main())
