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
    OnnxRuntimeFrameEncoder,
    OpenVINOFrameEncoder,
    compare_with_torch,
    encoder_runtime,
    resolve_runtime,
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
needs_onnxruntime = pytest.mark.skipif(
    not runtime_available("onnxruntime"),
    reason='onnxruntime or onnx is not installed (pip install ".[fast]")',
)
RUNTIME_CASES = pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"kind": "ae"},
        {"kind": "sparse", "latent_dim": 4, "channels": (8, 16, 16)},
        {"frame_shape": (40, 24, 1), "grayscale": True},
    ],
    ids=["vae", "ae", "sparse-3-convs", "gray-rectangular"],
)


@needs_openvino
@RUNTIME_CASES
def test_openvino_fp32_latents_equal_torch_on_real_frames(overrides):
    overrides = dict(overrides)  # the cases are shared by the runtimes' tests
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


@needs_onnxruntime
def test_auto_is_onnxruntime_on_the_cpu_at_fp32(model, frames):
    fe = encoder_runtime(model, precision="fp32")
    assert (fe.name, fe.precision) == ("onnxruntime", "fp32")
    assert compare_with_torch(fe, model, frames).ok


def test_auto_is_torch_at_bf16_and_for_topk_codes(model, frames):
    fe = encoder_runtime(model, precision="bf16")
    assert (fe.name, fe.precision) == ("torch", "bf16")
    assert resolve_runtime("auto", small_model(kind="topk", topk=2), "fp32") == "torch"


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


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_auto_falls_back_to_torch_where_onnxruntime_is_absent(model, frames, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
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
    with pytest.raises(ValueError, match=r"one of \('auto', 'torch', 'openvino', 'onnxruntime'\)"):
        encoder_runtime(model, "tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        encoder_runtime(model, "torch", precision="fp8")
    with pytest.raises(ValueError, match="cuda"):
        encoder_runtime(model, device="cuda")  # the model is on the CPU
    for runtime in ("auto", "torch"):  # auto: onnxruntime where installed
        fe = encoder_runtime(model, runtime)
        with pytest.raises(ValueError, match=r"model expects uint8 frames \(B, 32, 32, 3\)"):
            fe(frames.astype(np.float32))


@needs_onnxruntime
@RUNTIME_CASES
def test_onnxruntime_latents_equal_torch_on_real_frames(overrides):
    overrides = dict(overrides)  # the cases are shared by the runtimes' tests
    grayscale = overrides.pop("grayscale", False)
    model = small_model(**overrides)
    h, w, _ = model.config.frame_shape
    frames = env_frames(16, (h, w), grayscale)
    fe = encoder_runtime(model, "onnxruntime", precision="fp32")
    assert (fe.name, fe.precision, fe.latent_dim) == ("onnxruntime", "fp32", model.latent_dim)
    check = compare_with_torch(fe, model, frames)
    assert check.ok and check.rel <= TOLERANCE["fp32"] == 1e-5
    np.testing.assert_allclose(fe(frames), model.encode(frames), rtol=1e-4, atol=1e-5)


@needs_onnxruntime
def test_onnxruntime_keeps_encode_shapes_and_returns_its_own_arrays(model, frames):
    fe = encoder_runtime(model, "onnxruntime")
    assert fe.precision == "fp32"  # "auto" is fp32 here even on AMX CPUs
    first = fe(frames[:3])
    kept = first.copy()
    fe(frames[3:6])
    np.testing.assert_array_equal(first, kept)
    assert first.shape == (3, 6) and first.dtype == np.float32
    assert fe(frames[0]).shape == (6,)
    np.testing.assert_allclose(fe(frames[0]), first[0], rtol=1e-5, atol=1e-6)
    assert fe(frames[:0]).shape == (0, 6)
    # a non-contiguous batch (every other frame) gives the latents of its frames
    np.testing.assert_allclose(fe(frames[::2]), fe(frames)[::2], rtol=1e-5, atol=1e-6)


@needs_onnxruntime
def test_onnxruntime_threads_follow_torch_unless_given(model):
    assert OnnxRuntimeFrameEncoder(model).n_threads == torch.get_num_threads()
    fe = OnnxRuntimeFrameEncoder(model, n_threads=1)
    options = fe._session.get_session_options()
    assert (fe.n_threads, options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1, 1)


@needs_onnxruntime
def test_onnxruntime_encoder_survives_pickling(model, frames):
    fe = encoder_runtime(model, "onnxruntime", precision="fp32", n_threads=1)
    copy = pickle.loads(pickle.dumps(fe))
    assert (copy.name, copy.precision, copy.n_threads) == ("onnxruntime", "fp32", 1)
    np.testing.assert_array_equal(copy(frames), fe(frames))


@needs_onnxruntime
def test_onnxruntime_refuses_bf16_and_topk_codes(model):
    with pytest.raises(ValueError, match=r"runtime='onnxruntime' runs fp32 only"):
        encoder_runtime(model, "onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match=r"'topk' model keeps its top-k units in PyTorch"):
        encoder_runtime(small_model(kind="topk", topk=2), "onnxruntime")


def test_onnxruntime_is_refused_for_a_model_on_cuda(model, monkeypatch):
    monkeypatch.setattr(Autoencoder, "device", property(lambda self: torch.device("cuda", 0)))
    assert resolve_runtime("auto", model, "fp32") == "torch"
    with pytest.raises(ValueError, match=r"runtime='onnxruntime' runs on the CPU, the model is"):
        resolve_runtime("onnxruntime", model)


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_onnxruntime_that_is_not_installed_is_explained(model, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"runtime='onnxruntime' is not installed: pip install"):
        encoder_runtime(model, "onnxruntime")
    if module == "onnxruntime":
        with pytest.raises(ImportError, match=r"needs ONNX Runtime: pip install"):
            OnnxRuntimeFrameEncoder(model)
