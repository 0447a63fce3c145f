"""Where a model computes and in what precision: bf16 where the device takes it natively, fp32 elsewhere. Training
and evaluation decide it by the same rule, and their records name it the same way."""

from __future__ import annotations

from pathlib import Path


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


# Flags of CPUs whose matrix units take bf16 natively: without one, bf16 autocast is slower than fp32
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def use_bf16(setting, cuda: bool | None = None, flags: set[str] | None = None) -> bool:
    """`bf16: auto` computes in bf16 (autocast, fp32 weights) on a GPU that supports it and on a CPU with
    avx512_bf16 or AMX; true/false force it."""
    if isinstance(setting, str) and setting.lower() in ("true", "false"):  # as a string-typed config field gives it
        setting = setting.lower() == "true"
    if setting != "auto":
        return bool(setting)
    import torch

    if torch.cuda.is_available() if cuda is None else cuda:
        return torch.cuda.is_bf16_supported()
    return bool(CPU_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def precision(bf16: bool) -> str:
    """What a record says about how a model computed: the weights stay fp32 under bf16 autocast."""
    return "bf16-autocast" if bf16 else "fp32"


def eval_dtype(bf16_setting):
    """Inference dtype: bf16 where the training rule (use_bf16) computes in bf16, else fp32."""
    import torch

    return torch.bfloat16 if use_bf16(bf16_setting) else torch.float32


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
