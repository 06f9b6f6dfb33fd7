"""The memory model M: an LSTM whose output parameterises a mixture over the next latent.

World Models (Ha and Schmidhuber 2018) models ``P(z_{t+1} | a_t, z_t, h_t)`` as a mixture of
``K`` Gaussians per latent dimension, sampled at a temperature ``tau``; here M also predicts
the reward and the done flag of the step, so that an agent can be trained inside its dream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worldvae.memory.config import MemoryConfig
from worldvae.memory.losses import done_bce, masked_mean, mdn_nll

State = tuple[Tensor, Tensor]


@dataclass
class MDNOutput:
    """What M predicts for each input step; shapes ``(B, L, ...)``.

    Attributes:
        log_pi: normalised log mixture weights ``(B, L, D, K)``.
        mu, log_sigma: component means and log standard deviations ``(B, L, D, K)``.
        reward: predicted reward ``(B, L)``.
        done_logit: logit of the done flag ``(B, L)``.
        hidden: the LSTM output ``h`` after the step ``(B, L, H)``.
    """

    log_pi: Tensor
    mu: Tensor
    log_sigma: Tensor
    reward: Tensor
    done_logit: Tensor
    hidden: Tensor

    def mean(self) -> Tensor:
        """Expected next latent ``(B, L, D)``: the mixture's mean."""
        return (self.log_pi.exp() * self.mu).sum(dim=-1)


class MDNRNN(nn.Module):
    """LSTM + mixture density head (+ reward and done heads).

    Example:
        >>> m = MDNRNN(MemoryConfig(latent_dim=4, action_dim=2, hidden_size=16))
        >>> out, state = m(torch.zeros(3, 5, 4), torch.zeros(3, 5, 2))
        >>> out.mu.shape, out.hidden.shape
        (torch.Size([3, 5, 4, 5]), torch.Size([3, 5, 16]))
    """

    def __init__(self, config: MemoryConfig):
        super().__init__()
        self.config = config
        d, k = config.latent_dim, config.n_gaussians
        self.lstm = nn.LSTM(d + config.action_dim, config.hidden_size, batch_first=True)
        self.mdn = nn.Linear(config.hidden_size, 3 * d * k)
        self.reward_head = nn.Linear(config.hidden_size, 1)
        self.done_head = nn.Linear(config.hidden_size, 1)

    @property
    def device(self) -> torch.device:
        return self.mdn.weight.device

    def initial_state(self, batch_size: int) -> State:
        """Zero ``(h, c)``, each ``(1, B, H)``."""
        shape = (1, batch_size, self.config.hidden_size)
        return (torch.zeros(shape, device=self.device), torch.zeros(shape, device=self.device))

    def forward(
        self, z: Tensor, actions: Tensor, state: State | None = None
    ) -> tuple[MDNOutput, State]:
        """Latents ``(B, L, D)`` and encoded actions ``(B, L, A)`` -> predictions and state.

        Step ``t`` of the output predicts ``z_{t+1}``, ``r_t`` and ``done_t``.
        """
        cfg = self.config
        if z.shape[-1] != cfg.latent_dim or actions.shape[-1] != cfg.action_dim:
            raise ValueError(
                f"M expects latents (B, L, {cfg.latent_dim}) and actions (B, L, {cfg.action_dim}), "
                f"got {tuple(z.shape)} and {tuple(actions.shape)}"
            )
        h, state = self.lstm(torch.cat([z, actions], dim=-1), state)
        b, length = h.shape[:2]
        params = self.mdn(h).view(b, length, 3, cfg.latent_dim, cfg.n_gaussians)
        log_pi = torch.log_softmax(params[:, :, 0], dim=-1)
        # log sigma is clamped: a component collapsing onto one training point must not blow up
        log_sigma = params[:, :, 2].clamp(-7.0, 5.0)
        out = MDNOutput(
            log_pi=log_pi,
            mu=params[:, :, 1],
            log_sigma=log_sigma,
            reward=self.reward_head(h).squeeze(-1),
            done_logit=self.done_head(h).squeeze(-1),
            hidden=h,
        )
        return out, state

    def loss(
        self,
        z: Tensor,
        actions: Tensor,
        rewards: Tensor,
        dones: Tensor,
        mask: Tensor,
        reward_weight: float = 1.0,
        done_weight: float = 1.0,
        done_pos_weight: float = 1.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss on chunks: ``z`` ``(B, L+1, D)``, ``actions`` ``(B, L, A)``,
        ``rewards``, ``dones``, ``mask`` ``(B, L)``.

        ``loss = nll / D + reward_weight * mse + done_weight * bce`` (each a mean over valid
        steps); metrics hold ``nll`` (nats per step, summed over D), ``reward_mse``, ``done_bce``.
        """
        out, _ = self(z[:, :-1], actions)
        nll = masked_mean(mdn_nll(z[:, 1:], out.log_pi, out.mu, out.log_sigma), mask)
        loss = nll / self.config.latent_dim
        metrics: dict[str, Tensor] = {"nll": nll.detach()}
        if self.config.predict_reward:
            mse = masked_mean((out.reward - rewards) ** 2, mask)
            loss = loss + reward_weight * mse
            metrics["reward_mse"] = mse.detach()
        if self.config.predict_done:
            bce = masked_mean(done_bce(out.done_logit, dones, done_pos_weight), mask)
            loss = loss + done_weight * bce
            metrics["done_bce"] = bce.detach()
        metrics["loss"] = loss.detach()
        return loss, metrics

    @torch.inference_mode()
    def step(self, z: Tensor, actions: Tensor, state: State | None) -> tuple[MDNOutput, State]:
        """One step for ``B`` envs: ``z`` ``(B, D)``, ``actions`` ``(B, A)``; outputs ``(B, 1, ...)``."""
        if state is None:
            state = self.initial_state(z.shape[0])
        return self(z[:, None], actions[:, None], state)


def disagreement(outs: Sequence[MDNOutput]) -> Tensor:
    """How far several Ms part about the next latent, per step ``(B, L)``: the norm over
    latent dimensions of the standard deviation over ``outs`` (one per M, each ``(B, L, ...)``
    for the same inputs) of each M's expected next latent. Zero where they agree."""
    if len(outs) < 2:
        raise ValueError(f"disagreement needs the outputs of two Ms or more, got {len(outs)}")
    means = torch.stack([o.mean().float() for o in outs])  # (M, B, L, D)
    return means.std(dim=0, correction=0).norm(dim=-1)


def mixture_noise(
    n: int,
    d: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """The randomness of one :func:`sample_next` draw for ``n`` rows of ``d`` dimensions:
    uniforms ``(n, d)`` that pick each dimension's mixture component and standard normals
    ``(n, d)``, in that order from ``generator``."""
    u = torch.rand((n, d), generator=generator, device=device, dtype=dtype)
    eps = torch.randn((n, d), generator=generator, device=device, dtype=dtype)
    return u, eps


def sample_next(
    out: MDNOutput,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    noise: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Sample the next latent from the last step of ``out``: ``(B, D)``.

    World Models' temperature ``tau``: mixture logits are divided by ``tau`` and the standard
    deviations multiplied by ``sqrt(tau)``; ``tau -> 0`` approaches the most likely component's
    mean, ``tau > 1`` makes the dream more uncertain (harder to exploit). Each dimension's
    component is the first whose cumulative probability reaches a uniform draw (inverse CDF;
    a component of zero weight is never drawn).
    ``noise`` (:func:`mixture_noise`, ``(B, D)`` each) gives the draws, so rows can share
    them (common random numbers); None: drawn from ``generator``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_pi, mu, log_sigma = out.log_pi[:, -1], out.mu[:, -1], out.log_sigma[:, -1]  # (B, D, K)
    probs = torch.softmax(log_pi.float() / temperature, dim=-1)
    b, d, k = probs.shape
    u, eps = noise if noise is not None else mixture_noise(b, d, generator, mu.device)
    # the uniform is scaled by the CDF's own total, so a zero-weight last component is never
    # drawn even where float rounding leaves the total below 1
    cdf = probs.cumsum(-1)
    comp = (cdf < u.unsqueeze(-1) * cdf[..., -1:]).sum(-1, keepdim=True).clamp_(max=k - 1)
    mean = mu.gather(-1, comp).squeeze(-1)
    sigma = log_sigma.gather(-1, comp).squeeze(-1).exp() * temperature**0.5
    return mean + sigma * eps.to(mean.dtype)
