"""Where a model computes and in what precision: bf16 where the device takes it natively, fp32 elsewhere. Training
and evaluation decide it by the same rule, and their records name it the same way."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
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


def _cpu_times() -> tuple[int, int, int] | None:
    """(CPUs, idle jiffies, all jiffies) of the whole machine from /proc/stat; None where it cannot be read."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    total = [int(v) for v in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return cpus, total[3] + total[4], sum(total)


def free_cores(seconds: float = 0.2) -> float | None:
    """How many cores no process used over the last `seconds` (this process waits meanwhile); None where /proc/stat
    cannot be read or counts other CPUs than this process may use (a container sees its host's)."""
    first = _cpu_times()
    if first is None or first[0] != len(os.sched_getaffinity(0)):
        return None
    time.sleep(seconds)
    cpus, idle, total = _cpu_times()
    return cpus * (idle - first[1]) / max(total - first[2], 1)


def fit_threads(setting: int, default: int) -> int:
    """torch's threads for a stretch of compute: `setting` when above 0; 0 (auto): `default` (torch's own, one per
    core), or one per core that is free when other processes hold some, at least 1. A parallel product waits for its
    slowest thread: with the cores taken, two threads ran greedy decoding 7x slower than one (docs/speed.md)."""
    if setting > 0:
        return setting
    free = free_cores()
    return default if free is None else max(1, min(default, round(free)))


@contextmanager
def torch_threads(count: int):
    """torch's CPU threads set to `count` for the block, put back after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)
