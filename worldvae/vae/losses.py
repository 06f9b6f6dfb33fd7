"""Loss terms as pure functions. Shapes: batch B, latent D, frames (B, C, H, W) in [0, 1].

Reconstruction is summed over pixels, not averaged: averaging shrinks it by H*W*C against the
KL term and is a known cause of posterior collapse in VAE code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension: (B, D) -> (B, D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims: (B, D) -> (B,)."""
    return gaussian_kl_per_dim(mu, logvar).sum(dim=1)


def free_bits_kl(kl_per_dim: Tensor, free_bits: float) -> Tensor:
    """Batch-mean KL with a floor of ``free_bits`` nats per dimension (Kingma et al. 2016).

    (B, D) -> scalar. Dimensions already above the floor get the ordinary gradient; those below
    it get none, so the optimiser does not push them to exactly zero information.
    """
    return torch.clamp(kl_per_dim.mean(dim=0), min=free_bits).sum()


def capacity(step: int, capacity_max: float, capacity_steps: int) -> float:
    """Controlled-capacity target C in nats at ``step``: linear from 0 to ``capacity_max``."""
    if capacity_steps <= 0:
        return capacity_max
    return capacity_max * min(1.0, step / capacity_steps)


def reconstruction_loss(logits: Tensor, target: Tensor, likelihood: str) -> Tensor:
    """Negative log-likelihood of ``target`` summed over pixels: (B, C, H, W) x2 -> (B,).

    ``mse``: squared error of ``sigmoid(logits)`` (a unit-variance Gaussian up to constants
    and a factor 2); ``bernoulli``: binary cross-entropy with logits.
    """
    if likelihood == "mse":
        return (torch.sigmoid(logits) - target).pow(2).flatten(1).sum(dim=1)
    if likelihood == "bernoulli":
        return (
            F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            .flatten(1)
            .sum(dim=1)
        )
    raise ValueError(f"likelihood must be 'mse' or 'bernoulli', got {likelihood!r}")


def l1_sparsity(z: Tensor) -> Tensor:
    """L1 norm of the code: (B, D) -> (B,)."""
    return z.abs().sum(dim=1)


def keep_topk(z: Tensor, k: int) -> Tensor:
    """Zero all but the ``k`` largest-magnitude units of each code (Makhzani and Frey 2013).

    (B, D) -> (B, D); gradients flow through the kept units only.
    """
    idx = z.abs().topk(k, dim=1).indices
    mask = torch.zeros_like(z).scatter_(1, idx, 1.0)
    return z * mask


def jacobian_frobenius_sq(z: Tensor, x: Tensor, n_samples: int = 1) -> Tensor:
    """Unbiased estimate of ``||dz/dx||_F^2`` per sample: (B, D), (B, ...) -> (B,).

    Hutchinson's estimator: E_v ||J^T v||^2 = ||J||_F^2 for v ~ N(0, I). One vector-Jacobian
    product per sample instead of D backward passes; ``x`` must require grad and ``z`` must
    be computed from it. Used by the contractive autoencoder (Rifai et al. 2011).
    """
    total = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
    for _ in range(n_samples):
        v = torch.randn_like(z)
        (g,) = torch.autograd.grad(z, x, grad_outputs=v, create_graph=True)
        total = total + g.pow(2).flatten(1).sum(dim=1)
    return total / n_samples
