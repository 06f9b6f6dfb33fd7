"""What a code is good for, measured against the env's true factors on held-out episodes.

For one autoencoder (or a control: raw pixels, a random encoder, PCA) this module computes

- reconstruction error and KL (nats per frame) and active units;
- label efficiency: held-out R^2 / accuracy of a linear head per factor trained on 50, 500 and
  5,000 labelled frames (:mod:`worldvae.semisupervised`);
- MIG and DCI against the factors (:mod:`worldvae.disentanglement`);
- anomaly AUROC: the model's anomaly score on held-out frames against frames from another
  distribution (:func:`worldvae.metrics.auroc`);
- controllability: per factor, the code unit most correlated with it, and a traversal of that
  unit (one PNG row per factor).

Labelled frames come from the dataset's training episodes (labels are the scarce resource,
not frames); every score is computed on its validation episodes, which the autoencoder never
trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from worldvae.data import EpisodeDataset, read_episode
from worldvae.diagnostics import active_units, anomaly_scores, encode_batched, traversals
from worldvae.disentanglement import N_BINS, dci, mig
from worldvae.images import save_png
from worldvae.metrics import auroc
from worldvae.pca import fit_pca
from worldvae.semisupervised import LABEL_BUDGETS, label_efficiency
from worldvae.vae import losses
from worldvae.vae.autoencoder import Autoencoder
from worldvae.vae.config import AutoencoderConfig

CONTROLS = ("pixels", "random", "pca")


@dataclass(frozen=True)
class RepresentationConfig:
    """How a representation is scored.

    Attributes:
        label_budgets: labelled training frames for the semi-supervised heads.
        test_frames: held-out (validation-episode) frames every score is computed on.
        shifted_frames: frames of the shifted dataset for the anomaly AUROC.
        n_bins: histogram bins for MIG.
        pixel_side: the raw-pixel control sees frames area-resized to this side (a linear
            head on 64x64x3 = 12,288 inputs costs far more than on the 16x16x3 = 768 kept).
        pca_fit_frames: training frames PCA is fitted on.
        seed: picks frames and labelled subsets.
    """

    label_budgets: tuple[int, ...] = LABEL_BUDGETS
    test_frames: int = 2000
    shifted_frames: int = 2000
    n_bins: int = N_BINS
    pixel_side: int = 16
    pca_fit_frames: int = 2000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label_budgets"] = list(self.label_budgets)
        return d


@dataclass
class FactorData:
    """Frames with their true factors.

    Attributes:
        names: the ``S`` factor names.
        train_frames: uint8 ``(N, H, W, C)`` from training episodes; ``train_factors`` ``(N, S)``.
        test_frames: uint8 ``(M, H, W, C)`` from validation episodes; ``test_factors`` ``(M, S)``.
        shifted_frames: uint8 ``(P, H, W, C)`` from another distribution, or None.
    """

    names: tuple[str, ...]
    train_frames: np.ndarray
    train_factors: np.ndarray
    test_frames: np.ndarray
    test_factors: np.ndarray
    shifted_frames: np.ndarray | None = None


def _sample_episodes(
    episodes: tuple[Any, ...], n: int, seed: int, with_states: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``min(n, total)`` frames (and states) drawn without replacement from ``episodes``."""
    sizes = np.array([e.n_frames for e in episodes])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    pick = np.sort(
        np.random.default_rng(seed).choice(starts[-1], min(n, int(starts[-1])), replace=False)
    )
    keys = ("frames", "states") if with_states else ("frames",)
    frames, states = [], []
    for i, e in enumerate(episodes):
        take = pick[(pick >= starts[i]) & (pick < starts[i + 1])] - starts[i]
        if len(take) == 0:
            continue
        d = read_episode(e.path, keys=keys)
        frames.append(d["frames"][take])
        if with_states:
            states.append(d["states"][take])
    f = np.concatenate(frames)
    s = np.concatenate(states).astype(np.float32) if with_states else None
    return f, s


def require_states(dataset: EpisodeDataset) -> tuple[str, ...]:
    """The dataset's factor names; a clear error when it was collected without states."""
    names = dataset.state_names
    if names is None:
        raise ValueError(
            f"dataset {dataset.root} holds no env states, so probes, MIG and DCI have nothing to "
            f"score against; re-collect it with `worldvae collect --env {dataset.manifest.env_id} "
            "... --record-state` (classic control, MiniGrid, CarRacing)"
        )
    return tuple(names)


def load_factor_data(
    dataset: EpisodeDataset,
    config: RepresentationConfig,
    shifted: EpisodeDataset | None = None,
) -> FactorData:
    """Training-episode frames for labels, validation-episode frames for scores, and states.

    Raises:
        ValueError: the dataset holds no states (re-collect with ``--record-state``), lacks
            training or validation episodes, or the shifted frames differ in shape.
    """
    names = require_states(dataset)
    train, test = dataset.split("train"), dataset.split("val")
    if not train or not test:
        raise ValueError(
            f"dataset {dataset.root} has {len(train)} training and {len(test)} validation "
            "episodes; scores need both: collect more episodes"
        )
    n_train = max(config.label_budgets)
    tr_f, tr_s = _sample_episodes(train, n_train, config.seed, True)
    te_f, te_s = _sample_episodes(test, config.test_frames, config.seed + 1, True)
    assert tr_s is not None and te_s is not None
    shifted_frames = None
    if shifted is not None:
        shifted_frames, _ = _sample_episodes(
            shifted.episodes, config.shifted_frames, config.seed + 2, False
        )
        if shifted_frames.shape[1:] != te_f.shape[1:]:
            raise ValueError(
                f"shifted dataset {shifted.root} has frames {shifted_frames.shape[1:]}, the "
                f"dataset {te_f.shape[1:]}; collect it with the same --frame-size and --grayscale"
            )
    return FactorData(tuple(names), tr_f, tr_s, te_f, te_s, shifted_frames)


# ---- scores shared by models and controls --------------------------------------------------
def score_codes(
    train_codes: np.ndarray,
    test_codes: np.ndarray,
    data: FactorData,
    config: RepresentationConfig,
    disentanglement: bool = True,
) -> dict[str, Any]:
    """Label efficiency (and MIG, DCI) of codes ``(N, D)`` / ``(M, D)`` of ``data``'s frames."""
    probes = label_efficiency(
        train_codes,
        data.train_factors,
        test_codes,
        data.test_factors,
        data.names,
        config.label_budgets,
        config.seed,
    )
    sizes = sorted({n for per in probes.values() for n in per})
    out: dict[str, Any] = {
        "probe": {f: {str(n): s for n, s in per.items()} for f, per in probes.items()},
        "probe_mean": {str(n): float(np.nanmean([p[n] for p in probes.values()])) for n in sizes},
    }
    if disentanglement:
        score, gaps = mig(test_codes, data.test_factors, config.n_bins)
        d = dci(train_codes, data.train_factors, test_codes, data.test_factors, data.names)
        out |= {
            "mig": score,
            "mig_per_factor": {
                n: (None if np.isnan(g) else float(g))
                for n, g in zip(data.names, gaps, strict=True)
            },
            "dci_disentanglement": d.disentanglement,
            "dci_completeness": d.completeness,
            "dci_informativeness": d.informativeness,
        }
    return out


def reconstruction_and_kl(
    model: Autoencoder, frames: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-frame reconstruction error of the posterior mean ``(N,)`` and KL ``(N,)`` (VAEs).

    Both in nats under the model's likelihood, summed over pixels and latent units.
    """
    recon, kl = [], []
    with torch.inference_mode():
        for i in range(0, len(frames), batch_size):
            x = model.to_input(torch.from_numpy(frames[i : i + batch_size]))
            mu, logvar = model.posterior(x)
            logits = model.decode_logits(mu).float()
            recon.append(losses.reconstruction_loss(logits, x, model.config.likelihood).cpu())
            if logvar is not None:
                kl.append(losses.gaussian_kl(mu.float(), logvar.float()).cpu())
    return torch.cat(recon).numpy(), (torch.cat(kl).numpy() if kl else None)


def factor_units(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per factor, the code unit with the largest absolute Pearson correlation, and that value.

    ``codes`` ``(N, D)``, ``factors`` ``(N, S)`` -> unit indices ``(S,)``, correlations ``(S,)``
    (0 for a constant factor or code unit).
    """
    z = codes - codes.mean(axis=0)
    v = factors - factors.mean(axis=0)
    zs, vs = np.sqrt((z**2).sum(axis=0)), np.sqrt((v**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (z.T @ v) / np.outer(zs, vs)  # (D, S)
    corr = np.nan_to_num(corr)
    units = np.abs(corr).argmax(axis=0)
    return units, np.abs(corr)[units, np.arange(corr.shape[1])]


def _label_rows(image: np.ndarray, labels: list[str], n_rows: int, width: int = 150) -> np.ndarray:
    """Put a white margin with one text label per row on the left of a grid image."""
    margin = np.full((image.shape[0], width, 3), 255, np.uint8)
    row_h = image.shape[0] / n_rows
    for r, text in enumerate(labels):
        y = int(row_h * (r + 0.5)) + 4
        cv2.putText(margin, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([margin, image], axis=1)


def evaluate_model(
    model: Autoencoder,
    data: FactorData,
    config: RepresentationConfig,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Every score of one model; with ``out_dir``, its factor traversals as ``traversals.png``.

    Returns a JSON-ready dict: ``recon``, ``kl`` (None for non-VAEs), ``active_units``,
    ``latent_dim``, the keys of :func:`score_codes`, ``anomaly_auroc`` (None without shifted
    frames), ``controllability`` ``{factor: {unit, abs_corr}}``.
    """
    model.eval()
    model.check_frames(data.test_frames)
    train_mu, _ = encode_batched(model, data.train_frames)
    test_mu, _ = encode_batched(model, data.test_frames)
    recon, kl = reconstruction_and_kl(model, data.test_frames)
    out: dict[str, Any] = {
        "recon": float(recon.mean()),
        "kl": None if kl is None else float(kl.mean()),
        "active_units": int(active_units(test_mu).sum()),
        "latent_dim": int(test_mu.shape[1]),
    }
    out |= score_codes(train_mu, test_mu, data, config)
    if data.shifted_frames is not None:
        model.check_frames(data.shifted_frames)
        out["anomaly_auroc"] = auroc(
            anomaly_scores(model, data.test_frames), anomaly_scores(model, data.shifted_frames)
        )
    else:
        out["anomaly_auroc"] = None
    varying = [j for j in range(len(data.names)) if np.ptp(data.test_factors[:, j]) > 0]
    units, corr = factor_units(test_mu, data.test_factors[:, varying])
    out["controllability"] = {
        data.names[j]: {"unit": int(u), "abs_corr": float(c)}
        for j, u, c in zip(varying, units, corr, strict=True)
    }
    if out_dir is not None and varying:
        base = data.test_frames[len(data.test_frames) // 2]
        grid = traversals(model, base, test_mu, [int(u) for u in units])
        labels = [
            f"{data.names[j]}: z{u} |r|={c:.2f}"
            for j, u, c in zip(varying, units, corr, strict=True)
        ]
        out["traversals_png"] = str(
            save_png(Path(out_dir) / "traversals.png", _label_rows(grid, labels, len(varying)))
        )
    return out


# ---- controls -------------------------------------------------------------------------------
def pixel_features(frames: np.ndarray, side: int) -> np.ndarray:
    """uint8 frames ``(N, H, W, C)`` area-resized to ``side`` and flattened: ``(N, side*side*C)``."""
    out = [cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA) for f in frames]
    return np.stack(out).reshape(len(frames), -1).astype(np.float32) / 255.0


def evaluate_controls(
    data: FactorData,
    model_config: AutoencoderConfig,
    config: RepresentationConfig,
) -> dict[str, dict[str, Any]]:
    """The same scores for codes no training went into, the floor a learned code must beat.

    ``pixels``: raw pixels (resized to ``config.pixel_side``), label efficiency only;
    ``random``: an untrained encoder of ``model_config``'s architecture (seeded);
    ``pca``: the top ``latent_dim`` principal components of training frames
    (:func:`worldvae.pca.fit_pca`).
    """
    out: dict[str, dict[str, Any]] = {}
    tr = pixel_features(data.train_frames, config.pixel_side)
    te = pixel_features(data.test_frames, config.pixel_side)
    out["pixels"] = score_codes(tr, te, data, config, disentanglement=False)
    torch.manual_seed(config.seed)
    random = Autoencoder(model_config).eval()
    out["random"] = score_codes(
        encode_batched(random, data.train_frames)[0],
        encode_batched(random, data.test_frames)[0],
        data,
        config,
    )
    pca = fit_pca(data.train_frames[: config.pca_fit_frames], model_config.latent_dim, config.seed)
    pca_tr, pca_te = pca.encode(data.train_frames), pca.encode(data.test_frames)
    out["pca"] = score_codes(pca_tr, pca_te, data, config)
    for name in out:
        out[name]["latent_dim"] = {
            "pixels": int(tr.shape[1]),
            "random": model_config.latent_dim,
            "pca": int(pca_tr.shape[1]),
        }[name]
    return out
