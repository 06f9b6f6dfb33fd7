"""``latent+h`` observations: the VAE's latent ``z`` and M's hidden state ``h``, side by side.

M steps along with the real env (World Models' V + M features for the controller C): at time
``t`` the agent sees ``[z_t, h_t]``, where ``h_t`` is M's LSTM output after reading
``(z_{t-1}, a_{t-1})``; after a reset ``h`` is zero. ``LatentMemoryObservation`` wraps one
gymnasium env; ``VecLatentMemoryObservation`` wraps an SB3 VecEnv and encodes all frames (and
terminal frames) in one batch and steps M once for all envs. On the same seeds they give the
same observations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from envs.latent import check_frame_space, encode_step, frame_encoder, model_frames, resolve_model
from worldvae.data.latents import ActionSpec, EncodeResult, encode_dataset
from worldvae.encoders import Encoder
from worldvae.memory import MDNRNN, load_memory
from worldvae.memory.model import State


def action_spec_for(space: gym.Space) -> ActionSpec:
    """How M reads actions of ``space``: one-hot for Discrete, the raw vector for Box.

    Raises:
        ValueError: any other action space.
    """
    if isinstance(space, spaces.Discrete):
        return ActionSpec("discrete", int(space.n), start=int(space.start))
    if isinstance(space, spaces.Box):
        low = tuple(float(x) for x in np.asarray(space.low, np.float64).reshape(-1))
        high = tuple(float(x) for x in np.asarray(space.high, np.float64).reshape(-1))
        return ActionSpec("box", len(low), low=low, high=high)
    raise ValueError(f"M needs a Discrete or Box action space, got {space}")


def encode_latent_dataset(
    data: str | Path,
    model_dir: str | Path,
    out: str | Path,
    *,
    device: str = "auto",
    batch_size: int = 256,
    overwrite: bool = False,
    skip_corrupt: bool = False,
    progress: bool = True,
) -> EncodeResult:
    """Encode the episode dataset ``data`` with the VAE ``model_dir`` (a model or a
    ``train-vae`` run directory) into the latent dataset ``out``, M's training data.

    The actions are encoded for the env the dataset records (:func:`action_spec_for`); the
    rest is :func:`worldvae.data.latents.encode_dataset`: it resumes, and refuses an ``out``
    made from another dataset or model unless ``overwrite``.
    """
    from envs.factory import make_env
    from worldvae.data import Manifest
    from worldvae.vae import load_model
    from worldvae.vae.io import model_sha256, resolve_model_dir

    env = make_env(Manifest.load(data).env_spec)
    try:
        spec = action_spec_for(env.action_space)
    finally:
        env.close()
    model_dir = resolve_model_dir(model_dir)
    return encode_dataset(
        data,
        load_model(model_dir, device=device),
        model_dir,
        model_sha256(model_dir),
        out,
        spec,
        batch_size=batch_size,
        overwrite=overwrite,
        progress=progress,
        skip_corrupt=skip_corrupt,
    )


def resolve_memory(memory: MDNRNN | str | Path, device: str = "auto") -> MDNRNN:
    """A loaded M, or a memory model / ``train-rnn`` run directory to load (eval mode)."""
    if isinstance(memory, MDNRNN):
        return memory.eval()
    return load_memory(memory, device=device)[0]


def check_memory_fits(
    wrapper: str, memory: MDNRNN, model: Encoder | None, action_space: gym.Space
) -> ActionSpec:
    """Raise unless M reads this VAE's latents and this env's actions; return the action spec."""
    spec = action_spec_for(action_space)
    cfg = memory.config
    if model is not None and cfg.latent_dim != model.latent_dim:
        raise ValueError(
            f"{wrapper}: M reads latents of size {cfg.latent_dim}, the VAE gives "
            f"{model.latent_dim}; train M on data encoded by this VAE (`worldvae encode-data`)"
        )
    if cfg.action_dim != spec.dim:
        raise ValueError(
            f"{wrapper}: M reads actions of width {cfg.action_dim}, the env's {action_space} "
            f"encodes to {spec.dim}; train M on episodes of this env"
        )
    return spec


def resolve_models(
    wrapper: str,
    observation_space: gym.Space,
    action_space: gym.Space,
    model: Encoder | str | Path,
    memory: MDNRNN | str | Path,
    device: str = "auto",
) -> tuple[Encoder, MDNRNN, ActionSpec]:
    """V and M loaded (or as given), checked against the env's frames and actions, and M's
    action spec."""
    encoder = resolve_model(model, device)
    rnn = resolve_memory(memory, device)
    check_frame_space(wrapper, observation_space, encoder)
    return encoder, rnn, check_memory_fits(wrapper, rnn, encoder, action_space)


def memory_space(memory: MDNRNN) -> spaces.Box:
    """float32 ``Box((D + H,))`` of ``[z, h]``."""
    return spaces.Box(
        -np.inf, np.inf, (memory.config.latent_dim + memory.config.hidden_size,), np.float32
    )


class MemoryTracker:
    """M's recurrent state for ``n_envs`` envs, stepped in one batch."""

    def __init__(self, memory: MDNRNN, n_envs: int, action_spec: ActionSpec):
        self.memory, self.spec = memory, action_spec
        self.state: State = memory.initial_state(n_envs)
        self.hidden = np.zeros((n_envs, memory.config.hidden_size), np.float32)

    @torch.inference_mode()
    def reset(self, i: int) -> None:
        self.state[0][:, i] = 0.0
        self.state[1][:, i] = 0.0
        self.hidden[i] = 0.0

    @torch.inference_mode()
    def step(self, z: np.ndarray, actions: np.ndarray) -> None:
        """Advance every env's state by ``(z_t, a_t)``: ``z`` ``(N, D)``, raw actions ``(N, ...)``."""
        dev = self.memory.device
        a = torch.from_numpy(self.spec.encode(np.asarray(actions))).to(dev)
        out, self.state = self.memory.step(torch.from_numpy(z).to(dev), a, self.state)
        self.hidden = out.hidden[:, -1].float().cpu().numpy()

    def observation(self, z: np.ndarray, i: int) -> np.ndarray:
        return np.concatenate([z, self.hidden[i]]).astype(np.float32)


class LatentMemoryObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replace an env's frames with ``[z, h]``: V's latent and M's hidden state.

    Args:
        env: an env from :func:`envs.make_env` (uint8 ``(H, W, C)`` frames).
        model: the VAE (loaded, or a model / run directory).
        memory: M (loaded, or a memory model / ``train-rnn`` run directory).
        sample: draw latents from the posterior instead of taking its mean.
        device: where models given as paths are loaded.
        runtime: the V's inference runtime, ``"auto"``, ``"torch"`` or ``"openvino"``
            (:func:`envs.latent.frame_encoder`, in fp32); the one chosen is ``self.runtime``.

    As :class:`~envs.latent.LatentObservation`, it takes the raw frames of the env a model
    directory records, and applies the recorded preprocessing.

    Observation space: float32 ``Box((D + H,))``.

    Example:
        >>> env = LatentMemoryObservation(make_env("CartPole-v1"), "runs/vae/cp", "runs/rnn/cp")
        >>> obs, info = env.reset(seed=0)   # obs.shape == (32 + 256,)
    """

    def __init__(
        self,
        env: gym.Env,
        model: Encoder | str | Path,
        memory: MDNRNN | str | Path,
        sample: bool = False,
        device: str = "auto",
        runtime: str = "auto",
    ):
        gym.utils.RecordConstructorArgs.__init__(
            self,
            model=str(model) if isinstance(model, (str, Path)) else model,
            memory=str(memory) if isinstance(memory, (str, Path)) else memory,
            sample=sample,
            device=device,
            runtime=runtime,
        )
        vae = resolve_model(model, device)
        env, self.env_spec = model_frames("LatentMemoryObservation", env, model, vae)
        gym.Wrapper.__init__(self, env)
        self.model, self.memory, spec = resolve_models(
            "LatentMemoryObservation",
            env.observation_space,
            env.action_space,
            vae,
            memory,
            device,
        )
        self.sample = sample
        self.encoder = frame_encoder(self.model, runtime, "fp32", sample)
        self.runtime, self.precision = self.encoder.name, self.encoder.precision
        self.tracker = MemoryTracker(self.memory, 1, spec)
        self.observation_space = memory_space(self.memory)
        self.z = np.zeros(self.model.latent_dim, np.float32)
        self.last_frame: np.ndarray | None = None

    def _encode(self, frame: np.ndarray) -> np.ndarray:
        self.last_frame = frame
        return np.asarray(self.encoder(frame), np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        frame, info = self.env.reset(seed=seed, options=options)
        self.tracker.reset(0)
        self.z = self._encode(frame)
        return self.tracker.observation(self.z, 0), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        frame, reward, terminated, truncated, info = self.env.step(action)
        self.tracker.step(self.z[None], np.asarray(action)[None])
        self.z = self._encode(frame)
        return self.tracker.observation(self.z, 0), reward, terminated, truncated, info


class VecLatentMemoryObservation(VecEnvWrapper):
    """``[z, h]`` for all envs of an SB3 VecEnv: one batched encode and one M step per step.

    Same arguments and observations as :class:`LatentMemoryObservation`; ``infos[i]
    ["terminal_observation"]`` becomes the ``[z, h]`` the agent would have seen there.
    """

    def __init__(
        self,
        venv: VecEnv,
        model: Encoder | str | Path,
        memory: MDNRNN | str | Path,
        sample: bool = False,
        device: str = "auto",
        runtime: str = "auto",
    ):
        self.model, self.memory, spec = resolve_models(
            "VecLatentMemoryObservation",
            venv.observation_space,
            venv.action_space,
            model,
            memory,
            device,
        )
        self.sample = sample
        self.encoder = frame_encoder(self.model, runtime, "fp32", sample)
        self.runtime, self.precision = self.encoder.name, self.encoder.precision
        self.tracker = MemoryTracker(self.memory, venv.num_envs, spec)
        super().__init__(venv, observation_space=memory_space(self.memory))
        self.z = np.zeros((venv.num_envs, self.model.latent_dim), np.float32)
        self._actions: np.ndarray | None = None
        self.last_frames: np.ndarray | None = None

    def _encode(self, frames: np.ndarray) -> np.ndarray:
        return np.asarray(self.encoder(frames), np.float32)

    def _stacked(self) -> np.ndarray:
        return np.stack([self.tracker.observation(self.z[i], i) for i in range(self.num_envs)])

    def reset(self) -> VecEnvObs:
        frames = self.venv.reset()
        assert isinstance(frames, np.ndarray)
        self.last_frames = frames
        for i in range(self.num_envs):
            self.tracker.reset(i)
        self.z = self._encode(frames)
        return self._stacked()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        frames, rewards, dones, infos = self.venv.step_wait()
        assert isinstance(frames, np.ndarray) and self._actions is not None
        self.last_frames = frames
        # M reads (z_t, a_t) of every env, whether or not its episode just ended.
        self.tracker.step(self.z, self._actions)
        z, done_idx, z_terminal = encode_step(self._encode, frames, dones, infos)
        for j, i in enumerate(done_idx):
            infos[i]["terminal_observation"] = self.tracker.observation(z_terminal[j], i)
        self.z = z.copy()
        for i in range(self.num_envs):
            if dones[i]:
                self.tracker.reset(i)
        return self._stacked(), rewards, dones, infos
