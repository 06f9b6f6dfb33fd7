"""Losses of the memory model, as pure functions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def mdn_nll(target: Tensor, log_pi: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """Negative log-likelihood of ``target`` under a per-dimension Gaussian mixture.

    Args:
        target: ``(..., D)``.
        log_pi: normalised log mixture weights ``(..., D, K)``.
        mu, log_sigma: component means and log standard deviations ``(..., D, K)``.

    Returns:
        ``(...)``: nats, summed over the ``D`` dimensions.
    """
    x = target.unsqueeze(-1)
    log_normal = -0.5 * ((x - mu) * torch.exp(-log_sigma)) ** 2 - log_sigma - LOG_SQRT_2PI
    return -torch.logsumexp(log_pi + log_normal, dim=-1).sum(dim=-1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` ``(B, L)`` over the steps where ``mask`` ``(B, L)`` is 1."""
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def done_bce(logits: Tensor, dones: Tensor, pos_weight: float = 1.0) -> Tensor:
    """Per-step logistic loss of the done head: ``(B, L)`` x2 -> ``(B, L)``."""
    weight = torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, dones, pos_weight=weight, reduction="none")
