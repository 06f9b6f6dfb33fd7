"""Numeric precision of training and encoding: bf16 autocast where the hardware pays it back.

``--precision auto`` picks bf16 autocast on CUDA and on CPUs with AMX tiles, fp32 elsewhere.
On an AVX2-only CPU bf16 is emulated and slower than fp32. AVX512-BF16 alone is not enough
either: on a Sapphire Rapids VM whose hypervisor hides AMX (flags ``avx512_bf16`` without
``amx_bf16``), training the World Models V under bf16 autocast ran at 0.25x fp32
(``docs/benchmarks.md``), so only AMX counts. What the CPU has is read from
``/proc/cpuinfo``'s flags and from the capability torch reports
(``torch.backends.cpu.get_cpu_capability()``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
BF16_FLAGS = ("amx_bf16",)  # AMX: bf16 tiles; avx512_bf16 alone measured slower than fp32


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where that file is absent."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name, or ``"unknown"``."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "unknown"


def cpu_has_native_bf16() -> bool:
    """True when bf16 pays off on this CPU: AMX, by its flags or by torch's capability."""
    if cpu_flags() & set(BF16_FLAGS):
        return True
    return "AMX" in torch.backends.cpu.get_cpu_capability().upper()


def resolve_precision(
    precision: str,
    device: torch.device | str,
    cpu_bf16: Callable[[], bool] = cpu_has_native_bf16,
) -> str:
    """``"bf16"`` or ``"fp32"`` for ``precision`` on ``device``.

    Args:
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (the last two are returned as they are).
        device: where the model runs.
        cpu_bf16: the capability query for CPUs (by default :func:`cpu_has_native_bf16`).

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16"
    if kind == "cpu" and cpu_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device | str, precision: str) -> AbstractContextManager[object]:
    """bf16 autocast on ``device`` for a resolved ``precision`` of ``"bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def machine_summary() -> str:
    """CPU model, its flags, what torch reports and the load: printed by every benchmark."""
    import os

    flags = cpu_flags()
    vector = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return "\n".join(
        [
            f"CPU: {cpu_model()}, {os.cpu_count()} logical cores, load average "
            + " / ".join(f"{x:.1f}" for x in load),
            f"vector flags: {' '.join(vector) or 'none of avx2/avx512/amx'}; "
            f"bf16 pays off (AMX): {cpu_has_native_bf16()}",
            f"torch {torch.__version__}: capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads, CUDA {torch.cuda.is_available()}",
            f"all flags: {' '.join(sorted(flags))}",
        ]
    )
