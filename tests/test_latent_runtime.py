"""The latent wrappers' inference runtime: PyTorch by default, OpenVINO when asked for,
PyTorch for what OpenVINO does not cover, the same latents within tolerance either way."""

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.agent_config import resolve_config
from agents.environments import build_vec_env
from envs import LatentObservation, VecLatentObservation, make_env
from envs.latent import frame_encoder
from worldvae.envspec import EnvSpec
from worldvae.pca import fit_pca
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model
from worldvae.vae.inference import TOLERANCE, resolve_runtime, runtime_available

SIZE = 24
SPEC = EnvSpec("CartPole-v1", frame_size=SIZE, backend="gymnasium")
needs_openvino = pytest.mark.skipif(
    not runtime_available("openvino"), reason='OpenVINO is not installed (pip install -e ".[fast]")'
)


@pytest.fixture(scope="module")
def model() -> Autoencoder:
    torch.manual_seed(0)
    cfg = AutoencoderConfig(
        kind="vae", frame_shape=SPEC.frame_shape, latent_dim=6, channels=(8, 16)
    )
    return Autoencoder(cfg).eval()


def _cartpole():
    return make_env(SPEC)


def _close(z: np.ndarray, reference: np.ndarray, precision: str) -> None:
    scale = float(np.abs(reference).max()) or 1.0
    assert float(np.abs(z - reference).max()) / scale <= TOLERANCE[precision]


@needs_openvino
def test_openvino_runtime_gives_torchs_latents(model):
    env = LatentObservation(_cartpole(), model, frame_stack=2, runtime="openvino")
    ref = LatentObservation(_cartpole(), model, frame_stack=2, runtime="torch")
    assert (env.runtime, ref.runtime) == ("openvino", "torch")
    obs, ref_obs = env.reset(seed=4)[0], ref.reset(seed=4)[0]
    _close(obs, ref_obs, env.precision)
    for t in range(8):
        obs, ref_obs = env.step(t % 2)[0], ref.step(t % 2)[0]
        _close(obs, ref_obs, env.precision)


@needs_openvino
def test_vec_wrapper_runs_openvino_on_its_encode_threads(model):
    vec = VecLatentObservation(DummyVecEnv([_cartpole] * 3), model, runtime="openvino")
    ref = VecLatentObservation(DummyVecEnv([_cartpole] * 3), model)
    assert vec.runtime == "openvino" and vec.encoder.n_threads == vec.encode_threads == 1
    for v in (vec, ref):
        v.seed(2)
    _close(vec.reset(), ref.reset(), vec.precision)
    actions = np.array([0, 1, 0])
    _close(vec.step(actions)[0], ref.step(actions)[0], vec.precision)


def test_sampling_and_pca_keep_the_torch_path(model):
    assert LatentObservation(_cartpole(), model, sample=True).runtime == "torch"
    frames = np.random.default_rng(0).integers(0, 256, (40, SIZE, SIZE, 3), dtype=np.uint8)
    pca = fit_pca(frames, 4)
    encoder = frame_encoder(pca)
    assert encoder.name == "torch"
    np.testing.assert_array_equal(encoder(frames[:3]), pca.encode(frames[:3]))
    with pytest.raises(ValueError, match="sampled latents are encoded by PyTorch"):
        frame_encoder(model, "openvino", sample=True)
    with pytest.raises(ValueError, match="runtime must be one of"):
        LatentObservation(_cartpole(), model, runtime="onnx")


def test_agent_config_carries_the_runtime_to_the_wrapper(model, tmp_path):
    save_model(model, tmp_path / "v", extra={"data": SPEC.to_dict()})
    for runtime in ("torch", "auto"):
        cfg = resolve_config(
            "CartPole-v1", "latent", model_dir=str(tmp_path / "v"), runtime=runtime
        )
        assert cfg.runtime == runtime and type(cfg).from_dict(cfg.to_dict()) == cfg
        venv = build_vec_env(cfg, 1, 0, model)
        assert venv.runtime == resolve_runtime(runtime, model)  # auto: ONNX Runtime if installed
        venv.close()
