"""What M learned: next-step likelihood, reward and done accuracy, its rewards summed over real
episodes against their returns, dream strips and dream videos decoded by V."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from worldvae.data.latents import LatentDataset, LatentEpisodeInfo, SequenceStream
from worldvae.images import image_grid
from worldvae.memory.losses import mdn_nll
from worldvae.memory.model import MDNRNN, disagreement, sample_next
from worldvae.video import as_rgb, put_label, side_by_side


@torch.no_grad()
def evaluate_memory(
    model: MDNRNN, dataset: LatentDataset, split: str = "val", seq_len: int = 64
) -> dict[str, float]:
    """Teacher-forced metrics over a split, from the posterior means.

    Returns ``nll`` (nats per step, summed over D), ``nll_per_dim``, ``reward_mse``,
    ``reward_mae``, ``done_accuracy``, ``done_recall`` (share of true ends predicted, threshold
    0.5) and ``steps``.
    """
    episodes = dataset.split(split) or dataset.episodes  # type: ignore[arg-type]
    stream = SequenceStream(dataset, episodes, seq_len=seq_len, batch_size=64, shuffle=False)
    sums = {"nll": 0.0, "reward_mse": 0.0, "reward_mae": 0.0, "done_correct": 0.0}
    steps, ends, ends_found = 0.0, 0.0, 0.0
    model.eval()
    for batch in stream:
        t = {k: torch.from_numpy(v).to(model.device) for k, v in batch.items()}
        out, _ = model(t["mu"][:, :-1], t["actions"])
        m = t["mask"]
        sums["nll"] += float((mdn_nll(t["mu"][:, 1:], out.log_pi, out.mu, out.log_sigma) * m).sum())
        err = out.reward - t["rewards"]
        sums["reward_mse"] += float((err**2 * m).sum())
        sums["reward_mae"] += float((err.abs() * m).sum())
        pred = (out.done_logit > 0).float()
        sums["done_correct"] += float(((pred == t["dones"]).float() * m).sum())
        ends += float((t["dones"] * m).sum())
        ends_found += float((pred * t["dones"] * m).sum())
        steps += float(m.sum())
    n = max(steps, 1.0)
    return {
        "nll": sums["nll"] / n,
        "nll_per_dim": sums["nll"] / n / model.config.latent_dim,
        "reward_mse": sums["reward_mse"] / n,
        "reward_mae": sums["reward_mae"] / n,
        "done_accuracy": sums["done_correct"] / n,
        "done_recall": ends_found / ends if ends else float("nan"),
        "steps": steps,
    }


@dataclass(frozen=True)
class RewardCalibration:
    """M's reward head against the rewards of real episodes, teacher-forced (M reads each real
    latent and action in turn, its state carried through the episode, as it would when the
    agent plays the real env).

    ``real`` and ``predicted`` are per-episode returns ``(N,)``: the sum of the recorded
    rewards, and of M's predicted rewards for the same steps; ``step_mae`` is the mean
    absolute error per step over all of them."""

    real: np.ndarray
    predicted: np.ndarray
    step_mae: float
    steps: int

    def summary(self) -> dict[str, float]:
        """Means of the returns, their ratio, their correlation over episodes (NaN below two
        episodes or without spread), the step MAE and the number of steps and episodes."""
        real, pred = self.real, self.predicted
        spread = len(real) > 1 and real.std() > 0 and pred.std() > 0
        return {
            "episodes": float(len(real)),
            "steps": float(self.steps),
            "real_return": float(real.mean()),
            "predicted_return": float(pred.mean()),
            "ratio": float(pred.mean() / real.mean()) if real.mean() else float("nan"),
            "correlation": float(np.corrcoef(real, pred)[0, 1]) if spread else float("nan"),
            "step_mae": self.step_mae,
        }


def check_widths(model: MDNRNN, dataset: LatentDataset) -> None:
    """Refuse a latent dataset whose latents or actions are not ``model``'s width.

    Raises:
        ValueError: naming both widths and the fix.
    """
    cfg = model.config
    if (dataset.latent_dim, dataset.action_dim) != (cfg.latent_dim, cfg.action_dim):
        raise ValueError(
            f"M reads latents of {cfg.latent_dim} and actions of {cfg.action_dim}, the dataset "
            f"holds {dataset.latent_dim} and {dataset.action_dim}: give the latents of the V "
            "M was trained on"
        )


@torch.no_grad()
def reward_calibration(
    model: MDNRNN, dataset: LatentDataset, episodes: Sequence[LatentEpisodeInfo]
) -> RewardCalibration:
    """How well M's reward head sums to the real returns of ``episodes`` of ``dataset``
    (posterior means ``mu`` ``(T+1, D)``, encoded actions ``(T, A)``, rewards ``(T,)``).

    Raises:
        ValueError: M was trained without a reward head, no episode is given, or the dataset's
            latents or actions are not M's width.
    """
    if not model.config.predict_reward:
        raise ValueError("this M was trained without rewards (predict_reward false): no head")
    if not episodes:
        raise ValueError("no episode to calibrate M's rewards on")
    check_widths(model, dataset)
    model.eval()
    real, pred, abs_err, steps = [], [], 0.0, 0
    for info in episodes:
        ep = dataset.load(info)
        z = torch.as_tensor(ep["mu"][:-1], dtype=torch.float32, device=model.device)[None]
        a = torch.as_tensor(ep["actions"], dtype=torch.float32, device=model.device)[None]
        out, _ = model(z, a)
        r = ep["rewards"].astype(np.float64)
        p = out.reward[0].double().cpu().numpy()
        real.append(r.sum())
        pred.append(p.sum())
        abs_err += float(np.abs(p - r).sum())
        steps += len(r)
    return RewardCalibration(np.array(real), np.array(pred), abs_err / max(steps, 1), steps)


@torch.no_grad()
def teacher_forced_disagreement(
    models: Sequence[MDNRNN], dataset: LatentDataset, episodes: Sequence[LatentEpisodeInfo]
) -> np.ndarray:
    """The Ms' disagreement about the next latent (:func:`~worldvae.memory.model.disagreement`)
    at every step of ``episodes`` of ``dataset``, each M reading the real latents and actions
    with its state carried through the episode: ``(total steps,)``. On episodes like those the
    Ms were trained on this is the scale of their agreement, against which a dream's
    disagreement penalty is set.

    Raises:
        ValueError: fewer than two Ms, no episode, or latents or actions of another width.
    """
    if len(models) < 2:
        raise ValueError(f"disagreement needs two Ms or more, got {len(models)}")
    if not episodes:
        raise ValueError("no episode to read the Ms' disagreement on")
    for m in models:
        check_widths(m, dataset)
        m.eval()
    spread = []
    for info in episodes:
        ep = dataset.load(info)
        outs = []
        for m in models:
            z = torch.as_tensor(ep["mu"][:-1], dtype=torch.float32, device=m.device)[None]
            a = torch.as_tensor(ep["actions"], dtype=torch.float32, device=m.device)[None]
            outs.append(m(z, a)[0])
        spread.append(disagreement(outs)[0].cpu().numpy())
    return np.concatenate(spread).astype(np.float64)


@torch.no_grad()
def dream_rollout(
    model: MDNRNN,
    z0: np.ndarray,
    actions: np.ndarray,
    temperature: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open-loop dream from ``z0`` ``(D,)`` under the given encoded actions ``(T, A)``.

    Returns dreamed latents ``(T, D)`` (``z_1..z_T``), rewards ``(T,)`` and done
    probabilities ``(T,)``.
    """
    gen = torch.Generator(device=model.device).manual_seed(seed)
    z = torch.as_tensor(z0, dtype=torch.float32, device=model.device)[None]
    acts = torch.as_tensor(actions, dtype=torch.float32, device=model.device)
    state = model.initial_state(1)
    zs, rewards, dones = [], [], []
    for t in range(len(acts)):
        out, state = model(z[:, None], acts[t][None, None], state)
        z = sample_next(out, temperature, gen)
        zs.append(z[0].cpu().numpy())
        rewards.append(float(out.reward[0, -1]))
        dones.append(float(torch.sigmoid(out.done_logit[0, -1])))
    return np.stack(zs), np.array(rewards, np.float32), np.array(dones, np.float32)


@torch.no_grad()
def dream_strip(
    model: MDNRNN,
    vae: Any,
    episode: dict[str, np.ndarray],
    n_steps: int = 12,
    temperature: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """A PNG-ready strip, three rows of ``n_steps`` frames decoded by V:

    1. the real episode (V's reconstruction of each frame's posterior mean),
    2. M's one-step prediction (mixture mean given the real past),
    3. M's open-loop dream from the first real latent under the real actions, at ``temperature``.
    """
    mu, actions = episode["mu"], episode["actions"]
    n = min(n_steps, len(actions))
    z = torch.as_tensor(mu[: n + 1], dtype=torch.float32, device=model.device)[None]
    a = torch.as_tensor(actions[:n], dtype=torch.float32, device=model.device)[None]
    out, _ = model(z[:, :-1], a)
    one_step = out.mean()[0].cpu().numpy()
    dreamed, _, _ = dream_rollout(model, mu[0], actions[:n], temperature, seed)
    rows = [
        vae.decode(np.ascontiguousarray(x, np.float32)) for x in (mu[1 : n + 1], one_step, dreamed)
    ]
    scale = max(1, 96 // max(rows[0].shape[1:3]))
    return image_grid(np.stack(rows), pad=2, scale=scale)


@torch.no_grad()
def dream_video(
    model: MDNRNN,
    vae: Any,
    episode: dict[str, np.ndarray],
    n_steps: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    pad: int = 2,
) -> np.ndarray:
    """Frames of a video, uint8 ``(T, S*H, 2*S*W + pad, 3)``: two panels side by side, each
    upscaled ``S`` times (to about 128 pixels) and labelled.

    Left, the real episode (V's reconstruction of the posterior mean of frames ``1..T``);
    right, M's open-loop dream from the first real latent under the same actions, at
    ``temperature`` (the third row of :func:`dream_strip`, for ``T = min(n_steps, episode
    length)`` steps). Where they part is where M's predictions drift.
    """
    mu, actions = episode["mu"], episode["actions"]
    n = min(n_steps, len(actions))
    dreamed, _, _ = dream_rollout(model, mu[0], actions[:n], temperature, seed)
    real = vae.decode(np.ascontiguousarray(mu[1 : n + 1], np.float32))
    dream = vae.decode(np.ascontiguousarray(dreamed, np.float32))
    scale = max(1, 128 // max(real.shape[1:3]))
    frames = []
    for t in range(n):
        left, right = (
            as_rgb(x[t]).repeat(scale, axis=0).repeat(scale, axis=1) for x in (real, dream)
        )
        frames.append(
            side_by_side(put_label(left, f"real t={t + 1}"), put_label(right, "M's dream"), pad)
        )
    return np.stack(frames)
