"""The encoder features extractor runs the model's own code path."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.extractor import PretrainedEncoderExtractor
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model


def _model(kind: str, **kw) -> Autoencoder:
    torch.manual_seed(0)
    cfg = AutoencoderConfig(
        kind=kind, frame_shape=(40, 40, 3), latent_dim=8, channels=(8, 16, 32), **kw
    )
    return Autoencoder(cfg).eval()


def _frames(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["topk", "vae"])
def test_encoder_features_equal_the_latent_wrapper(kind, tmp_path):
    """The extractor runs the model's own code path: top-k sparsity included."""
    model = _model(kind, topk=3)
    save_model(model, tmp_path / "m")
    space = gym.spaces.Box(0, 255, (3, 40, 40), np.uint8)
    extractor = PretrainedEncoderExtractor(space, str(tmp_path / "m"))
    frames = _frames()
    # What SB3 hands the extractor: channels first, scaled to [0, 1].
    observations = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        features = extractor(observations).numpy()
    expected = model.encode(frames)  # what LatentObservation / VecLatentObservation give
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    if kind == "topk":
        assert ((features != 0).sum(axis=1) == 3).all()
    assert not any(p.requires_grad for p in extractor.parameters())  # frozen by default
