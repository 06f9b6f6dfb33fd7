"""The encoders of the control arms, built from the pretrained VAE and its data.

* ``random``: the VAE's architecture (same config), freshly initialised from the run's seed and
  never trained; one per agent seed, so the spread over seeds includes the draw of weights. Its
  code is standardised on the VAE's training frames (zero mean, unit variance per dimension, by
  rescaling the output layer), as the PCA is whitened: an untrained encoder's codes vary by
  about 0.003, two orders below a trained VAE's, and a policy network would read them as
  constants. The control then differs from the VAE in what its code holds, not in its scale.
* ``pca``: a whitened PCA of the VAE's training frames with the VAE's latent size.

Both are written once under the comparison's ``controls/`` directory and reused on re-runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from agents.arms import get_arm
from worldvae.data import EpisodeDataset
from worldvae.pca import fit_pca, is_pca_dir
from worldvae.records import record_path, recorded_path
from worldvae.vae import Autoencoder, save_model
from worldvae.vae.io import WEIGHTS_NAME, read_model_config, resolve_model_dir

PCA_FIT_FRAMES = 2_000


def vae_data_dir(model_dir: str | Path) -> str | None:
    """The dataset a VAE run was trained on, as its run config records it (None if unknown).

    The record holds an absolute path; an older one's relative path is read beside the run
    first, then under the working folder (:func:`worldvae.records.recorded_path`).
    """
    cfg = Path(model_dir) / "config.json"
    try:
        root = json.loads(cfg.read_text()).get("data", {}).get("root")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    path = recorded_path(root, model_dir, "the VAE's dataset") if isinstance(root, str) else None
    return str(path) if path is not None and path.is_dir() else None


def random_encoder_dir(
    model_dir: str | Path,
    out: Path,
    seed: int,
    data_dir: str | Path | None = None,
    n_frames: int = PCA_FIT_FRAMES,
) -> Path:
    """An untrained copy of the VAE's architecture, initialised with ``seed``, its code
    standardised on ``n_frames`` training frames of ``data_dir`` (left as drawn without data)."""
    target = out / f"random_seed{seed}"
    if (target / WEIGHTS_NAME).is_file():
        return target
    config, vae_extra = read_model_config(resolve_model_dir(model_dir))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Autoencoder(config).eval()
    extra: dict[str, object] = {"control": "random", "seed": seed, "standardised": False}
    if "data" in vae_extra:  # the VAE's env spec: the control sees the same frames
        extra["data"] = vae_extra["data"]
    if data_dir is not None:
        frames = _training_frames(data_dir, config.frame_shape, n_frames)
        standardise_code(model, frames)
        extra |= {"standardised": True, "standardised_on": record_path(data_dir)}
    return save_model(model, target, extra=extra)


def standardise_code(model: Autoencoder, frames: np.ndarray) -> None:
    """Rescale the output layer so that the codes of ``frames`` ``(N, H, W, C)`` uint8 have
    zero mean and unit variance per dimension; the encoder is otherwise unchanged."""
    with torch.no_grad():
        codes = torch.as_tensor(model.encode(frames))
        mean, std = codes.mean(0), codes.std(0).clamp_min(1e-8)
        d = model.config.latent_dim  # the first D outputs are the code (the mean for VAEs)
        model.head.weight[:d] /= std[:, None]
        model.head.bias[:d] = (model.head.bias[:d] - mean) / std


def pca_encoder_dir(
    model_dir: str | Path, data_dir: str | Path, out: Path, n_frames: int = PCA_FIT_FRAMES
) -> Path:
    """A PCA of the training frames of ``data_dir`` to the VAE's latent size."""
    target = out / "pca"
    if is_pca_dir(target) and (target / WEIGHTS_NAME).is_file():
        return target
    config, vae_extra = read_model_config(resolve_model_dir(model_dir))
    frames = _training_frames(data_dir, config.frame_shape, n_frames)
    extra = {"control": "pca"} | ({"data": vae_extra["data"]} if "data" in vae_extra else {})
    return fit_pca(frames, config.latent_dim, seed=0).save(target, extra)


def _training_frames(data_dir: str | Path, frame_shape: tuple[int, ...], n: int) -> np.ndarray:
    """``n`` frames ``(n, H, W, C)`` of the train split of ``data_dir`` (seeded)."""
    dataset = EpisodeDataset(data_dir)
    if tuple(dataset.frame_shape) != tuple(frame_shape):
        raise ValueError(
            f"the dataset {data_dir} holds frames {dataset.frame_shape}, the model expects "
            f"{frame_shape}; pass the data the model was trained on"
        )
    return dataset.sample_frames(n, seed=0, which="train")


def arm_model_dir(
    obs: str, model_dir: str | None, data_dir: str | None, out: Path, seed: int
) -> str | None:
    """The model directory an agent of arm ``obs`` and ``seed`` is trained with."""
    source = get_arm(obs).model
    if source is None:
        return None
    if model_dir is None:
        raise ValueError(f"{obs!r} needs the pretrained model: pass --model DIR")
    if source == "vae":
        return model_dir
    if source == "random":
        return str(random_encoder_dir(model_dir, out, seed, data_dir))
    if data_dir is None:
        raise ValueError("'pca' needs the frames the model was trained on: pass --data DIR")
    return str(pca_encoder_dir(model_dir, data_dir, out))
