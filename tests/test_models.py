import math
import pickle

import numpy as np
import pytest
import torch

from worldvae.vae import (
    KINDS,
    Autoencoder,
    AutoencoderConfig,
    CheckpointError,
    load_model,
    losses,
    save_model,
)
from worldvae.vae.networks import conv_sizes


def test_gaussian_kl_matches_closed_form():
    mu = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(4.0), math.log(0.25)]])
    # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1 - ln s^2) / 2
    expected = torch.tensor(
        [0.0 + 0.5, 0.5 * (4 + 4 - 1 - math.log(4)) + 0.5 * (1 + 0.25 - 1 - math.log(0.25))]
    )
    torch.testing.assert_close(losses.gaussian_kl(mu, logvar), expected)
    assert losses.gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max() == 0


def test_free_bits_floor_and_capacity_schedule():
    kl = torch.tensor([[0.1, 2.0], [0.3, 4.0]])  # batch means: 0.2, 3.0
    assert losses.free_bits_kl(kl, 0.5).item() == pytest.approx(0.5 + 3.0)
    assert losses.free_bits_kl(kl, 0.0).item() == pytest.approx(3.2)
    assert losses.capacity(0, 25.0, 100) == 0.0
    assert losses.capacity(50, 25.0, 100) == 12.5
    assert losses.capacity(500, 25.0, 100) == 25.0


def test_reconstruction_is_summed_over_pixels():
    target = torch.zeros(2, 3, 4, 4)
    logits = torch.zeros(2, 3, 4, 4)  # sigmoid -> 0.5 everywhere
    assert losses.reconstruction_loss(logits, target, "mse").tolist() == [12.0, 12.0]  # 48 * 0.25
    bce = losses.reconstruction_loss(logits, target, "bernoulli")
    torch.testing.assert_close(bce, torch.full((2,), 48 * math.log(2.0)))


def test_topk_keeps_k_largest_magnitudes():
    z = torch.tensor([[0.1, -3.0, 2.0, 0.5], [1.0, 0.0, -0.2, 0.3]])
    out = losses.keep_topk(z, 2)
    torch.testing.assert_close(out, torch.tensor([[0.0, -3.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.3]]))


def test_jacobian_estimate_matches_exact_for_a_linear_map():
    torch.manual_seed(0)
    a = torch.randn(3, 5)
    x = torch.randn(4, 5, requires_grad=True)
    est = losses.jacobian_frobenius_sq(x @ a.T, x, n_samples=4000)
    torch.testing.assert_close(est, (a**2).sum().expand(4), rtol=0.08, atol=0)


def test_too_small_frames_are_refused_clearly():
    with pytest.raises(ValueError, match="too small for 4 stride-2 convs"):
        Autoencoder(AutoencoderConfig(frame_shape=(32, 32, 3)))


@pytest.mark.parametrize("size", [64, 84, 96])
def test_layer_shapes_derive_from_frame_size(size):
    model = Autoencoder(AutoencoderConfig(kind="vae", frame_shape=(size, size, 3)))
    assert model.encoder.out_hw == (conv_sizes(size, 4)[-1],) * 2
    frames = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    z = model.encode(frames)
    assert z.shape == (2, 32) and z.dtype == np.float32
    assert model.decode(z).shape == (2, size, size, 3)


def test_world_models_v_shapes():
    model = Autoencoder(AutoencoderConfig())
    assert conv_sizes(64, 4) == [64, 31, 14, 6, 2]
    assert model.encoder.out_features == 256 * 2 * 2
    assert [m.out_channels for m in model.encoder.net if isinstance(m, torch.nn.Conv2d)] == [
        32,
        64,
        128,
        256,
    ]


def _bright_square_frames(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Frames with one bright square at a random place: easy to learn, not constant."""
    rng = np.random.default_rng(seed)
    frames = np.full((n, size, size, 3), 30, np.uint8)
    for i in range(n):
        y, x = rng.integers(0, size - 8, 2)
        frames[i, y : y + 8, x : x + 8] = (220, 180, 40)
    return torch.from_numpy(frames)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_learns(kind):
    torch.manual_seed(0)
    extra = {"beta": 4.0, "free_bits": 0.1} if kind == "beta-vae" else {}
    model = Autoencoder(
        AutoencoderConfig(
            kind=kind, frame_shape=(32, 32, 3), channels=(16, 32, 64), latent_dim=8, topk=3, **extra
        )
    )
    frames = _bright_square_frames(64)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for step in range(40):
        loss, metrics = model.training_loss(frames, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(metrics["recon"])
    assert float(metrics["recon"]) < 0.6 * first, kind
    assert torch.isfinite(loss)


def test_encode_sample_differs_from_mean_only_for_vaes():
    frames = _bright_square_frames(4).numpy()
    vae = Autoencoder(AutoencoderConfig(kind="vae", frame_shape=(32, 32, 3), channels=(16, 32, 64)))
    assert not np.allclose(vae.encode(frames), vae.encode(frames, sample=True))
    np.testing.assert_array_equal(vae.encode(frames), vae.encode(frames))
    ae = Autoencoder(AutoencoderConfig(kind="ae", frame_shape=(32, 32, 3), channels=(16, 32, 64)))
    np.testing.assert_array_equal(ae.encode(frames), ae.encode(frames, sample=True))


def test_encode_keeps_type_and_single_frames():
    model = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(32, 32, 3), channels=(16, 32, 64))
    )
    frames = _bright_square_frames(3)
    assert isinstance(model.encode(frames), torch.Tensor)
    single = model.encode(frames[0].numpy())
    assert single.shape == (32,)
    np.testing.assert_allclose(single, model.encode(frames.numpy())[0], rtol=1e-5, atol=1e-6)


def test_frame_shape_mismatch_says_how_to_fix():
    model = Autoencoder(AutoencoderConfig(frame_shape=(64, 64, 3)))
    with pytest.raises(
        ValueError,
        match=r"expects uint8 frames \(B, 64, 64, 3\).*make_env\(\.\.\., frame_size=\(64, 64\)",
    ):
        model.encode(np.zeros((2, 96, 96, 3), np.uint8))
    with pytest.raises(ValueError, match="got float32"):
        model.encode(np.zeros((2, 64, 64, 3), np.float32))


def test_unknown_config_key_is_an_error():
    with pytest.raises(ValueError, match=r"unknown autoencoder config keys \['latnet_dim'\]"):
        AutoencoderConfig.from_dict({"latnet_dim": 8})


def test_save_load_round_trip_is_identical(tmp_path):
    torch.manual_seed(0)
    model = Autoencoder(
        AutoencoderConfig(
            kind="beta-vae", frame_shape=(32, 32, 1), channels=(16, 32, 64), latent_dim=6, beta=4.0
        )
    ).eval()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config == model.config
    frames = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 1), dtype=np.uint8)
    np.testing.assert_array_equal(model.encode(frames), loaded.encode(frames))
    np.testing.assert_array_equal(
        model.decode(model.encode(frames)), loaded.decode(loaded.encode(frames))
    )


def test_corrupt_and_missing_checkpoints_give_clear_errors(tmp_path):
    model = Autoencoder(AutoencoderConfig(frame_shape=(32, 32, 3), channels=(16, 32, 64)))
    save_model(model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(tmp_path / "m")
    with pytest.raises(CheckpointError, match="is not a model directory"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid model config"):
        load_model(tmp_path / "m")


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickle_posing_as_checkpoint_is_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = Autoencoder(AutoencoderConfig(frame_shape=(32, 32, 3), channels=(16, 32, 64)))
    save_model(model, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "m")
    assert not (tmp_path / "PWNED").exists()
