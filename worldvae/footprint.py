"""Memory a training run needs, estimated from its configuration before anything is allocated.

Every size of V and M is range-checked, but the ranges are wide (``--hidden-size`` up to
65536), and a model inside them can still need more memory than the machine has: the OOM
killer then ends the run without a word, or the allocator's own message appears. The trainers
call :func:`check_fits` first, so such a run is refused with what it would need and what the
machine has, before any folder is written.

The estimates count the weights on the ``meta`` device (no memory), times the copies training
keeps (weights, gradients, the two Adam moments, the optimiser's and the checkpoint's
temporaries), plus the activations one batch keeps for the backward pass. They were measured
against the peak resident memory of CPU training: within some tens of percent, which is all a
refusal of a run ten times too large needs.

Example:
    >>> big = memory_model_bytes(MemoryConfig(hidden_size=65536), batch_size=32, seq_len=32)
    >>> round(big / 2**30)  # GiB: refused on almost any machine
    389
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

from worldvae.memory.config import MemoryConfig
from worldvae.memory.model import MDNRNN
from worldvae.vae.autoencoder import Autoencoder
from worldvae.vae.config import AutoencoderConfig
from worldvae.vae.networks import conv_sizes

FLOAT_BYTES = 4
# Copies of the weights training holds at its peak, measured on CPU: weights, gradients, Adam's
# two moments, Adam's update temporary and the checkpoint's serialised copy (the LSTM's
# backward adds another weight-sized temporary).
MEMORY_MODEL_COPIES = 6
AUTOENCODER_COPIES = 5
# Floats each (sequence, step) keeps for the backward pass: the LSTM's gates, cell and output
# states (about 15 per unit) and the mixture head's outputs and loss terms (8 per D*K).
LSTM_FLOATS_PER_UNIT = 15
MIXTURE_FLOATS_PER_OUTPUT = 8
# The autoencoder keeps each feature map about twice per frame (the map and its gradient or the
# loss's temporaries).
FEATURE_MAP_COPIES = 2
GIB = 2**30


class InsufficientMemoryError(ValueError):
    """A run would need more memory than the machine (or the GPU) has available."""


def count_parameters(build: type[nn.Module], config: object) -> int:
    """Parameters of ``build(config)``, built on the ``meta`` device (nothing is allocated)."""
    with torch.device("meta"):
        model = build(config)
    return sum(p.numel() for p in model.parameters())


def memory_model_bytes(config: MemoryConfig, batch_size: int, seq_len: int) -> int:
    """Bytes that training M with ``config`` on ``batch_size`` chunks of ``seq_len`` steps
    needs at its peak (weights and optimiser state, plus one batch's activations)."""
    params = count_parameters(MDNRNN, config)
    per_step = (
        LSTM_FLOATS_PER_UNIT * config.hidden_size
        + MIXTURE_FLOATS_PER_OUTPUT * config.latent_dim * config.n_gaussians
    )
    return FLOAT_BYTES * (MEMORY_MODEL_COPIES * params + batch_size * seq_len * per_step)


def autoencoder_bytes(config: AutoencoderConfig, batch_size: int) -> int:
    """Bytes that training the autoencoder ``config`` on batches of ``batch_size`` frames needs
    at its peak (weights and optimiser state, plus one batch's feature maps)."""
    params = count_parameters(Autoencoder, config)
    h, w, c = config.frame_shape
    n = len(config.channels)
    hs, ws = conv_sizes(h, n), conv_sizes(w, n)
    maps = sum(ch * hh * ww for ch, hh, ww in zip(config.channels, hs[1:], ws[1:], strict=True))
    # the frame in and the logits out, the encoder's maps and the decoder's mirror of them
    per_frame = 2 * c * h * w + 2 * maps
    return FLOAT_BYTES * (AUTOENCODER_COPIES * params + FEATURE_MAP_COPIES * batch_size * per_frame)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, keys: tuple[str, ...]) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        key, _, value = line.partition(" ")
        if key in keys and value.strip().isdigit():
            return int(value)
    return 0


def _cgroup_headroom() -> int | None:
    """What this process's memory cgroup (v2, else v1) still allows, reclaimable cache counted
    as free; None without a limit."""
    v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/memory")
    for limit_file, usage_file, stat_file, cache_keys in (
        (v2 / "memory.max", v2 / "memory.current", v2 / "memory.stat", ("inactive_file",)),
        (
            v1 / "memory.limit_in_bytes",
            v1 / "memory.usage_in_bytes",
            v1 / "memory.stat",
            ("total_inactive_file", "inactive_file"),
        ),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is None or usage is None or limit >= 2**60:  # "max" or no limit
            continue
        return max(0, limit - usage + _stat_value(stat_file, cache_keys))
    return None


def available_host_bytes() -> int | None:
    """Memory this process can still take: ``MemAvailable`` (Linux), lowered to what its
    cgroup allows; elsewhere the free physical pages; None when unknown."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    if not found:  # not Linux
        with contextlib.suppress(ValueError, OSError, AttributeError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    headroom = _cgroup_headroom()
    if headroom is not None:
        found.append(headroom)
    return min(found) if found else None


def available_bytes(device: torch.device) -> int | None:
    """Free memory where a model on ``device`` lives: the GPU's, or the host's for the CPU;
    None when it cannot be read (another accelerator, a GPU that does not answer)."""
    if device.type == "cpu":
        return available_host_bytes()
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError, ValueError):
            return None
        return int(free)
    return None


def check_fits(need: int, device: torch.device, what: str, fix: str) -> None:
    """Refuse a run that would need ``need`` bytes on ``device`` when less is available.

    Raises:
        InsufficientMemoryError: naming ``what`` needs it, both sizes, and ``fix``.
    """
    have = available_bytes(device)
    if have is None or need <= have:
        return
    where = "this machine has" if device.type == "cpu" else f"{device} has"
    raise InsufficientMemoryError(
        f"{what} would need about {need / GIB:.1f} GiB of memory to train (weights, gradients, "
        f"optimiser state, one batch's activations), and {where} {have / GIB:.1f} GiB "
        f"available; nothing was written: {fix}"
    )
