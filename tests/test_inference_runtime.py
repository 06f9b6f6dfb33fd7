"""The V's encoder on its inference runtimes: same latents as PyTorch, clear choices and errors."""

from __future__ import annotations

import pickle
import sys
from typing import Any

import numpy as np
import pytest
import torch

from envs import make_env
from worldvae.vae import Autoencoder, AutoencoderConfig
from worldvae.vae.inference import (
    TOLERANCE,
    OpenVINOFrameEncoder,
    compare_with_torch,
    encoder_runtime,
    runtime_available,
)

SIZE = 32


def env_frames(n: int, frame_size: int | tuple[int, int] = SIZE, grayscale: bool = False):
    """``n`` real CartPole-v1 frames ``(n, H, W, C)`` under random actions."""
    env = make_env("CartPole-v1", frame_size=frame_size, grayscale=grayscale)
    env.action_space.seed(0)
    frame, _ = env.reset(seed=0)
    frames = [frame]
    while len(frames) < n:
        frame, _, terminated, truncated, _ = env.step(env.action_space.sample())
        frames.append(frame)
        if terminated or truncated:
            frames.append(env.reset()[0])
    env.close()
    return np.stack(frames[:n])


def small_model(**overrides: Any) -> Autoencoder:
    torch.manual_seed(0)
    fields: dict[str, Any] = {
        "kind": "vae",
        "frame_shape": (SIZE, SIZE, 3),
        "latent_dim": 6,
        "channels": (8, 16),
    }
    return Autoencoder(AutoencoderConfig(**(fields | overrides))).eval()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return env_frames(24)


@pytest.fixture
def model() -> Autoencoder:
    return small_model()


needs_openvino = pytest.mark.skipif(
    not runtime_available("openvino"), reason='OpenVINO is not installed (pip install ".[fast]")'
)


@needs_openvino
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"kind": "ae"},
        {"kind": "sparse", "latent_dim": 4, "channels": (8, 16, 16)},
        {"frame_shape": (40, 24, 1), "grayscale": True},
    ],
    ids=["vae", "ae", "sparse-3-convs", "gray-rectangular"],
)
def test_openvino_fp32_latents_equal_torch_on_real_frames(overrides):
    grayscale = overrides.pop("grayscale", False)
    model = small_model(**overrides)
    h, w, _ = model.config.frame_shape
    frames = env_frames(16, (h, w), grayscale)
    fe = encoder_runtime(model, "openvino", precision="fp32")
    assert (fe.name, fe.precision) == ("openvino", "fp32")
    check = compare_with_torch(fe, model, frames)
    assert check.ok and check.rel <= TOLERANCE["fp32"] == 1e-5
    np.testing.assert_allclose(fe(frames), model.encode(frames), rtol=1e-4, atol=1e-5)


@needs_openvino
def test_openvino_bf16_latents_lie_within_the_stated_tolerance(model, frames):
    fe = encoder_runtime(model, "openvino", precision="bf16")
    check = compare_with_torch(fe, model, frames)
    assert fe.precision == "bf16" and check.ok, check


@needs_openvino
def test_openvino_keeps_encode_shapes_and_returns_its_own_arrays(model, frames):
    fe = encoder_runtime(model, "openvino", precision="fp32")
    first = fe(frames[:3])
    kept = first.copy()
    fe(frames[3:6])  # the runtime reuses its output buffer: earlier results must not change
    np.testing.assert_array_equal(first, kept)
    assert first.shape == (3, 6) and first.dtype == np.float32
    assert fe(frames[0]).shape == (6,)
    np.testing.assert_allclose(fe(frames[0]), first[0], rtol=1e-5, atol=1e-6)
    assert fe(frames[:0]).shape == (0, 6)


@needs_openvino
def test_openvino_threads_follow_torch_unless_given(model):
    assert OpenVINOFrameEncoder(model).n_threads == torch.get_num_threads()
    assert OpenVINOFrameEncoder(model, n_threads=1).n_threads == 1


@needs_openvino
def test_openvino_encoder_survives_pickling(model, frames):
    fe = encoder_runtime(model, "openvino", precision="fp32", n_threads=1)
    copy = pickle.loads(pickle.dumps(fe))
    assert (copy.name, copy.precision, copy.n_threads) == ("openvino", "fp32", 1)
    np.testing.assert_array_equal(copy(frames), fe(frames))


def test_auto_is_torch(model, frames):
    fe = encoder_runtime(model, precision="fp32")
    assert fe.name == "torch"
    np.testing.assert_array_equal(fe(frames), model.encode(frames))


def test_torch_runtime_is_model_encode(model, frames):
    fe = encoder_runtime(model, "torch", precision="fp32")
    assert (fe.name, fe.precision, fe.latent_dim) == ("torch", "fp32", 6)
    np.testing.assert_array_equal(fe(frames), model.encode(frames))
    assert compare_with_torch(fe, model, frames).max_abs == 0.0


def test_named_runtime_that_is_not_installed_is_explained(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"runtime='openvino' is not installed: pip install"):
        encoder_runtime(model, "openvino")
    with pytest.raises(ImportError, match=r"needs OpenVINO: pip install"):
        OpenVINOFrameEncoder(model)


def test_auto_falls_back_to_torch_where_openvino_is_absent(model, frames, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    fe = encoder_runtime(model, "auto", precision="fp32")
    assert fe.name == "torch"
    np.testing.assert_array_equal(fe(frames), model.encode(frames))


@needs_openvino
def test_topk_codes_stay_on_torch(frames):
    model = small_model(kind="topk", topk=2)
    assert encoder_runtime(model).name == "torch"
    with pytest.raises(ValueError, match=r"'topk' model keeps its top-k units in PyTorch"):
        encoder_runtime(model, "openvino")


def test_bad_arguments_are_explained(model, frames):
    with pytest.raises(ValueError, match=r"runtime must be one of \('auto', 'torch', 'openvino'\)"):
        encoder_runtime(model, "tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        encoder_runtime(model, "torch", precision="fp8")
    with pytest.raises(ValueError, match="cuda"):
        encoder_runtime(model, device="cuda")  # the model is on the CPU
    fe = encoder_runtime(model)
    with pytest.raises(ValueError, match=r"model expects uint8 frames \(B, 32, 32, 3\)"):
        fe(frames.astype(np.float32))
