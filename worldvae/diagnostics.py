"""What a trained autoencoder learned: pictures, KL per dimension, active units, anomaly scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldvae.data import EpisodeDataset
from worldvae.data.loader import FrameStream
from worldvae.images import image_grid, save_png
from worldvae.vae import losses
from worldvae.vae.autoencoder import Autoencoder


def collect_frames(dataset: EpisodeDataset, split: str = "val", limit: int = 4096) -> np.ndarray:
    """Up to ``limit`` frames of one split (falls back to all episodes if the split is empty)."""
    episodes = dataset.split(split) or dataset.episodes  # type: ignore[arg-type]
    out, n = [], 0
    for batch in FrameStream(episodes, batch_size=512, shuffle=False):
        out.append(batch)
        n += len(batch)
        if n >= limit:
            break
    return np.concatenate(out)[:limit]


def encode_batched(
    model: Autoencoder, frames: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray | None]:
    """Posterior means ``(N, D)`` and log-variances ``(N, D)`` (None for non-VAEs)."""
    mus, logvars = [], []
    with torch.inference_mode():
        for i in range(0, len(frames), batch_size):
            x = model.to_input(torch.from_numpy(frames[i : i + batch_size]))
            mu, logvar = model.posterior(x)
            mus.append(mu.float().cpu().numpy())
            if logvar is not None:
                logvars.append(logvar.float().cpu().numpy())
    return np.concatenate(mus), (np.concatenate(logvars) if logvars else None)


def kl_per_dimension(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Average KL to the prior per latent dimension: (N, D) x2 -> (D,) nats (the training
    loss's own :func:`worldvae.vae.losses.gaussian_kl_per_dim`)."""
    kl = losses.gaussian_kl_per_dim(
        torch.from_numpy(mu).double(), torch.from_numpy(logvar).double()
    )
    return kl.mean(dim=0).numpy()


def active_units(mu: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Dimensions whose posterior mean varies across inputs: Cov_x(E[z|x]) > threshold.

    (N, D) -> bool (D,). The definition of Burda et al. (2016); a collapsed dimension has a
    mean that ignores the input.
    """
    return mu.var(axis=0) > threshold


def _latent_scale(model: Autoencoder, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and spread to explore: the prior N(0, 1) for VAEs, the code statistics otherwise."""
    if model.config.variational:
        return np.zeros(mu.shape[1], np.float32), np.ones(mu.shape[1], np.float32)
    return mu.mean(axis=0), mu.std(axis=0) + 1e-6


def reconstruction_grid(model: Autoencoder, frames: np.ndarray) -> np.ndarray:
    """Rows of (input | output) pairs, 4 pairs per row: ``(N, H, W, C)`` uint8 -> one image.

    The trainer's ``images/reconstructions.png`` and ``inspect``'s are drawn by this."""
    recon = model.reconstruct(frames)
    pairs = np.stack([frames, recon], axis=1)  # (N, 2, H, W, C)
    n_per_row = 4
    n = len(frames) // n_per_row * n_per_row or len(frames)
    rows = pairs[:n].reshape(-1, min(n_per_row, n) * 2, *frames.shape[1:])
    return image_grid(rows, scale=2)


def prior_samples(model: Autoencoder, mu: np.ndarray, n: int = 32, seed: int = 0) -> np.ndarray:
    """Decoded samples from the prior (VAEs) or from a Gaussian fit of the codes (AEs)."""
    centre, scale = _latent_scale(model, mu)
    z = centre + scale * np.random.default_rng(seed).standard_normal((n, mu.shape[1])).astype(
        np.float32
    )
    return image_grid(model.decode(z.astype(np.float32)), n_cols=8, scale=2)


def traversals(
    model: Autoencoder,
    frame: np.ndarray,
    mu: np.ndarray,
    dims: list[int],
    n_steps: int = 9,
    span: float = 2.5,
) -> np.ndarray:
    """One row per dimension: the frame's code with that dimension swept over +- ``span`` sd."""
    base = model.encode(frame[None])[0]
    centre, scale = _latent_scale(model, mu)
    values = np.linspace(-span, span, n_steps, dtype=np.float32)
    z = np.repeat(base[None, None], len(dims), 0).repeat(n_steps, 1)  # (dims, steps, D)
    for r, d in enumerate(dims):
        z[r, :, d] = centre[d] + values * scale[d]
    frames = model.decode(z.reshape(-1, z.shape[-1]).astype(np.float32))
    return image_grid(frames.reshape(len(dims), n_steps, *frames.shape[1:]), scale=2)


def interpolation(
    model: Autoencoder, a: np.ndarray, b: np.ndarray, n_steps: int = 10
) -> np.ndarray:
    """Decoded straight line between the codes of two frames, with both frames at the ends."""
    za, zb = model.encode(np.stack([a, b]))
    t = np.linspace(0, 1, n_steps, dtype=np.float32)[:, None]
    frames = model.decode(((1 - t) * za + t * zb).astype(np.float32))
    return image_grid(np.concatenate([a[None], frames, b[None]])[None], scale=2)


def anomaly_scores(model: Autoencoder, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Per-frame scores ``(N,)``; see :meth:`Autoencoder.anomaly_score`."""
    return np.concatenate(
        [model.anomaly_score(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)]
    )


def calibrate_threshold(val_scores: np.ndarray, quantile: float = 0.99) -> float:
    """Score above which a frame is called anomalous: the ``quantile`` of validation scores."""
    return float(np.quantile(val_scores, quantile))


def inspect_model(
    model: Autoencoder,
    dataset: EpisodeDataset,
    out_dir: str | Path,
    shifted: EpisodeDataset | None = None,
    n_frames: int = 2048,
    quantile: float = 0.99,
    seed: int = 0,
) -> dict:
    """Write every diagnostic picture into ``out_dir`` and return the numbers as a dict."""
    out = Path(out_dir)
    frames = collect_frames(dataset, "val", n_frames)
    model.check_frames(frames)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(frames), size=min(16, len(frames)), replace=False)
    mu, logvar = encode_batched(model, frames)
    active = active_units(mu)
    summary: dict = {
        "frames": len(frames),
        "active_units": int(active.sum()),
        "latent_dim": int(mu.shape[1]),
    }
    if logvar is not None:
        kl = kl_per_dimension(mu, logvar)
        summary["kl_per_dim"] = [round(float(v), 4) for v in kl]
        summary["kl_total"] = float(kl.sum())
        order = list(np.argsort(-kl))
    else:
        order = list(np.argsort(-mu.var(axis=0)))
    dims = [int(d) for d in order[: min(10, len(order))]]
    files = {
        "reconstructions": save_png(
            out / "reconstructions.png", reconstruction_grid(model, frames[pick])
        ),
        "prior_samples": save_png(out / "prior_samples.png", prior_samples(model, mu, seed=seed)),
        "traversals": save_png(
            out / "traversals.png", traversals(model, frames[pick[0]], mu, dims)
        ),
        "interpolation": save_png(
            out / "interpolation.png", interpolation(model, frames[pick[0]], frames[pick[-1]])
        ),
    }
    summary["traversal_dims"] = dims
    scores = anomaly_scores(model, frames)
    threshold = calibrate_threshold(scores, quantile)
    report = {
        "threshold": threshold,
        "quantile": quantile,
        "flagged_in_distribution": float((scores > threshold).mean()),
        "mean_score_in_distribution": float(scores.mean()),
    }
    pool, pool_scores = frames, scores
    if shifted is not None:
        s_frames = collect_frames(shifted, "all", n_frames)
        model.check_frames(s_frames)
        s_scores = anomaly_scores(model, s_frames)
        report |= {
            "flagged_shifted": float((s_scores > threshold).mean()),
            "mean_score_shifted": float(s_scores.mean()),
        }
        pool, pool_scores = s_frames, s_scores
    top = np.argsort(-pool_scores)[:16]
    files["anomalies"] = save_png(out / "anomalies.png", image_grid(pool[top], n_cols=8, scale=2))
    summary["anomaly"] = report
    summary["files"] = {k: str(v) for k, v in files.items()}
    return summary
