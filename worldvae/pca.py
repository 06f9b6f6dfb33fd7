"""A PCA of frames as an encoder: the linear control for a learnt code.

``PCAEncoder`` has the inference interface of :class:`~worldvae.vae.Autoencoder`
(``encode``, ``decode``, ``reconstruct``, ``latent_dim``, ``config.frame_shape``), so the
latent wrappers and agent bundles take it in place of a VAE. Codes are whitened (each
component divided by its standard deviation on the training frames), so they have unit
variance like a VAE's posterior means. Stored as ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from worldvae.atomic import atomic_path, write_json

PCA_KIND = "pca"


@dataclass(frozen=True)
class PCAConfig:
    """Shape of a PCA encoder: frames ``(H, W, C)`` to ``latent_dim`` whitened components."""

    frame_shape: tuple[int, int, int]
    latent_dim: int
    kind: str = PCA_KIND
    n_fit_frames: int = 0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "frame_shape": list(self.frame_shape),
            "latent_dim": self.latent_dim,
            "n_fit_frames": self.n_fit_frames,
            "seed": self.seed,
        }


class PCAEncoder:
    """Whitened principal components of uint8 frames.

    Attributes:
        config: frame shape and number of components ``D``.
        mean: ``(F,)`` mean frame in [0, 1], ``F = H * W * C``.
        components: ``(D, F)`` orthonormal rows, strongest first.
        scale: ``(D,)`` standard deviation of each component on the fitted frames.
    """

    def __init__(
        self, config: PCAConfig, mean: np.ndarray, components: np.ndarray, scale: np.ndarray
    ):
        n_features = int(np.prod(config.frame_shape))
        if components.shape != (config.latent_dim, n_features) or mean.shape != (n_features,):
            raise ValueError(
                f"PCAEncoder: components {components.shape} and mean {mean.shape} do not fit "
                f"{config.latent_dim} components of frames {config.frame_shape}"
            )
        self.config = config
        self.mean = mean.astype(np.float32)
        self.components = components.astype(np.float32)
        self.scale = np.maximum(scale.astype(np.float32), 1e-8)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def eval(self) -> PCAEncoder:
        """No-op, for the same interface as a torch model."""
        return self

    def _flat(self, frames: np.ndarray) -> tuple[np.ndarray, bool]:
        frames = np.asarray(frames)
        shape = tuple(self.config.frame_shape)
        if frames.dtype != np.uint8 or frames.shape[-3:] != shape or frames.ndim not in (3, 4):
            raise ValueError(
                f"PCAEncoder expects uint8 frames (B, *{shape}) or {shape}, got "
                f"{frames.dtype} {frames.shape}"
            )
        single = frames.ndim == 3
        batch = frames[None] if single else frames
        return batch.reshape(len(batch), -1).astype(np.float32) / 255.0, single

    def encode(self, frames: np.ndarray, sample: bool = False) -> np.ndarray:
        """uint8 frames ``(B, H, W, C)`` or ``(H, W, C)`` -> float32 codes ``(B, D)`` or ``(D,)``.

        ``sample`` is accepted for interface compatibility; a PCA code is deterministic. The
        projection runs on torch's CPU threads (``torch.set_num_threads``), not numpy's BLAS
        pool: a worker process that keeps to one torch thread keeps to it here too, where
        OpenBLAS would start a thread per core that spin between calls and take the cores
        from the env beside it (docs/benchmarks.md, "PCA codes").
        """
        import torch

        x, single = self._flat(frames)
        with torch.autocast("cpu", enabled=False):  # fp32 whatever precision the caller runs
            centred = torch.from_numpy(x) - torch.from_numpy(self.mean)
            projected = centred @ torch.from_numpy(self.components).T
            z = (projected / torch.from_numpy(self.scale)).numpy()
        return z[0] if single else z

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Codes ``(B, D)`` or ``(D,)`` -> uint8 frames ``(B, H, W, C)`` or ``(H, W, C)``."""
        z = np.asarray(z, np.float32)
        single = z.ndim == 1
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"decode expects codes (B, {self.latent_dim}), got {z.shape}")
        x = ((z[None] if single else z) * self.scale) @ self.components + self.mean
        frames = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
        frames = frames.reshape(-1, *self.config.frame_shape)
        return frames[0] if single else frames

    def reconstruct(self, frames: np.ndarray) -> np.ndarray:
        """Frames through the code and back: same shape as ``frames``."""
        return self.decode(self.encode(frames))

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` (with ``extra`` as its ``extra_info``) and ``model.safetensors``
        (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file(
                {"mean": self.mean, "components": self.components, "scale": self.scale}, str(tmp)
            )
        write_json(
            directory / "config.json", {"model": self.config.to_dict(), "extra_info": extra or {}}
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> PCAEncoder:
        directory = Path(directory)
        try:
            d = json.loads((directory / "config.json").read_text())["model"]
            config = PCAConfig(
                frame_shape=tuple(d["frame_shape"]),
                latent_dim=int(d["latent_dim"]),
                n_fit_frames=int(d.get("n_fit_frames", 0)),
                seed=int(d.get("seed", 0)),
            )
            w = load_file(str(directory / "model.safetensors"))
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"{directory} is not a readable PCA encoder directory ({e})") from e
        if w["scale"].shape != (config.latent_dim,):
            raise ValueError(
                f"{directory / 'model.safetensors'}: scale {w['scale'].shape} does not fit "
                f"{config.latent_dim} components (config.json); restore the encoder or fit it again"
            )
        if not all(np.isfinite(w[k]).all() for k in ("mean", "components", "scale")):
            raise ValueError(
                f"{directory / 'model.safetensors'} holds non-finite values (NaN or infinity); "
                "the encoder is damaged: fit it again"
            )
        return cls(config, w["mean"], w["components"], w["scale"])


def is_pca_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds a :class:`PCAEncoder` (its config's kind is ``pca``)."""
    path = Path(directory) / "config.json"
    try:
        return json.loads(path.read_text()).get("model", {}).get("kind") == PCA_KIND
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def fit_pca(
    frames: np.ndarray, latent_dim: int, seed: int = 0, n_power_iterations: int = 3
) -> PCAEncoder:
    """PCA of uint8 frames ``(N, H, W, C)`` to ``latent_dim`` whitened components.

    A randomised SVD (Halko, Martinsson and Tropp 2011, with power iterations): exact up to
    numerical error when ``latent_dim`` is well below ``N`` and ``H * W * C``, and far cheaper
    than a full SVD of a ``(N, H*W*C)`` matrix.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(
            f"fit_pca expects uint8 frames (N, H, W, C), got {frames.dtype} {frames.shape}"
        )
    n, h, w, c = frames.shape
    if not 1 <= latent_dim < min(n, h * w * c):
        raise ValueError(
            f"fit_pca: latent_dim must be in 1..{min(n, h * w * c) - 1} for {n} frames of "
            f"{h * w * c} values, got {latent_dim}"
        )
    x = frames.reshape(n, -1).astype(np.float32) / 255.0
    mean = x.mean(axis=0)
    x -= mean
    rng = np.random.default_rng(seed)
    k = min(latent_dim + 10, min(x.shape) - 1)
    q, _ = np.linalg.qr(x @ rng.standard_normal((x.shape[1], k)).astype(np.float32))
    for _ in range(n_power_iterations):
        q, _ = np.linalg.qr(x.T @ q)
        q, _ = np.linalg.qr(x @ q)
    _, s, vt = np.linalg.svd(q.T @ x, full_matrices=False)
    components = vt[:latent_dim]
    # The sign of a component is arbitrary; fix it so the largest loading is positive.
    signs = np.sign(components[np.arange(latent_dim), np.abs(components).argmax(axis=1)])
    components *= signs[:, None]
    scale = s[:latent_dim] / np.sqrt(max(n - 1, 1))
    config = PCAConfig(frame_shape=(h, w, c), latent_dim=latent_dim, n_fit_frames=n, seed=seed)
    return PCAEncoder(config, mean, components, scale)
