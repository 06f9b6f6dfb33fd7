"""Latent observations: frames encoded by a pretrained autoencoder, for RL agents.

``LatentObservation`` wraps one gymnasium env; ``VecLatentObservation`` wraps an SB3 VecEnv
and encodes the frames of all its envs in one batched call (on the GPU when present). Both
build their observation from the same :class:`LatentHistory`, so on the same seeds they give
the same observations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from envs.preprocessing import is_image_space
from worldvae.encoders import Encoder, load_encoder
from worldvae.precision import autocast, resolve_precision


def resolve_model(model: Encoder | str | Path, device: str = "auto") -> Encoder:
    """A loaded model (autoencoder or PCA), or a model / run / PCA directory to load (in eval mode)."""
    if isinstance(model, (str, Path)):
        return load_encoder(model, device=device)
    return model.eval()


def check_frame_space(wrapper: str, space: gym.Space, model: Encoder) -> None:
    """Raise a clear error unless ``space`` holds uint8 frames of the model's shape."""
    if not is_image_space(space) or len(space.shape or ()) != 3:
        raise ValueError(f"{wrapper} requires a uint8 (H, W, C) Box observation space, got {space}")
    expected = tuple(model.config.frame_shape)
    if tuple(space.shape or ()) != expected:
        h, w, c = expected
        raise ValueError(
            f"{wrapper}: the model expects frames {expected}, the env gives {space.shape}; "
            f"make the env with make_env(..., frame_size=({h}, {w})"
            f"{', grayscale=True' if c == 1 else ''}) or use a model trained on these frames"
        )


def encode_step(
    encode: Callable[[np.ndarray], np.ndarray],
    frames: np.ndarray,
    dones: np.ndarray,
    infos: Sequence[dict[str, Any]],
) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Encode a VecEnv step's frames and the terminal frames of finished episodes in one call.

    Returns the latents of ``frames`` ``(N, D)``, the envs whose episode ended with a
    ``terminal_observation`` in their info, and the latents of those terminal frames.
    """
    n = len(frames)
    done_idx = [i for i in range(n) if dones[i] and "terminal_observation" in infos[i]]
    batch = [frames] + (
        [np.stack([infos[i]["terminal_observation"] for i in done_idx])] if done_idx else []
    )
    z_all = encode(np.concatenate(batch))
    return z_all[:n], done_idx, z_all[n:]


class LatentHistory:
    """Per-env buffers of the last ``frame_stack`` latents and ``action_history`` actions.

    The observation of env ``i`` is ``[z_{t-k+1}, ..., z_t, a_{t-n}, ..., a_{t-1}]`` as float32
    ``(k * D + n * A,)``; Discrete actions are one-hot (``A = n_actions``), Box actions raw.
    After a reset the stack holds zeros and the first latent, and the actions are zero: an
    episode starts as SB3's ``VecFrameStack`` starts the pixel arm's (zero frames before the
    first), so every arm meets the same kind of start (a zero latent is the prior's mean).
    """

    def __init__(
        self,
        n_envs: int,
        latent_dim: int,
        action_space: gym.Space,
        frame_stack: int,
        action_history: int,
    ):
        if frame_stack < 1 or action_history < 0:
            raise ValueError("frame_stack must be >= 1 and action_history >= 0")
        if action_history and not isinstance(action_space, (spaces.Discrete, spaces.Box)):
            raise ValueError(
                f"action history needs a Discrete or Box action space, got {action_space}"
            )
        self.k, self.n, self.d = frame_stack, action_history, latent_dim
        self.action_space = action_space
        if isinstance(action_space, spaces.Discrete):
            self.a = int(action_space.n)
        else:
            self.a = int(np.prod(action_space.shape or ())) if action_history else 0
        self.latents = np.zeros((n_envs, frame_stack, latent_dim), np.float32)
        self.actions = np.zeros((n_envs, max(action_history, 1), max(self.a, 1)), np.float32)

    @property
    def size(self) -> int:
        return self.k * self.d + self.n * self.a

    def space(self) -> spaces.Box:
        return spaces.Box(-np.inf, np.inf, (self.size,), np.float32)

    def encode_action(self, action: Any) -> np.ndarray:
        if isinstance(self.action_space, spaces.Discrete):
            one_hot = np.zeros(self.a, np.float32)
            one_hot[int(np.asarray(action).item()) - int(self.action_space.start)] = 1.0
            return one_hot
        return np.asarray(action, np.float32).reshape(-1)

    def reset(self, i: int, z: np.ndarray) -> None:
        self.latents[i] = 0.0
        self.latents[i, -1] = z
        self.actions[i] = 0.0

    def push(self, i: int, z: np.ndarray, action: Any) -> None:
        self.latents[i] = np.roll(self.latents[i], -1, axis=0)
        self.latents[i, -1] = z
        if self.n:
            self.actions[i] = np.roll(self.actions[i], -1, axis=0)
            self.actions[i, -1] = self.encode_action(action)

    def observation(self, i: int) -> np.ndarray:
        parts = [self.latents[i].reshape(-1)]
        if self.n:
            parts.append(self.actions[i].reshape(-1))
        return np.concatenate(parts)


class LatentObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replace an env's uint8 frames with the autoencoder's latents.

    Args:
        env: an env from :func:`envs.make_env` (uint8 ``(H, W, C)`` frames).
        model: a loaded :class:`~worldvae.vae.Autoencoder`, or a model / run directory.
        frame_stack: number of latest latents concatenated (``k``).
        action_history: number of previous actions appended (``n``).
        sample: draw latents from the posterior instead of taking its mean.
        device: where a model given as a path is loaded (``"auto"``: CUDA when present).
        precision: ``"auto"`` (bf16 autocast on CUDA and AMX CPUs), ``"fp32"`` or
            ``"bf16"``; the resolved one is ``self.precision``.

    Observation space: float32 ``Box((k * D + n * A,))``.

    Example:
        >>> env = LatentObservation(make_env("CarRacing-v3"), "runs/vae/carracing")
        >>> obs, info = env.reset(seed=0)   # obs.shape == (32,)
    """

    def __init__(
        self,
        env: gym.Env,
        model: Encoder | str | Path,
        frame_stack: int = 1,
        action_history: int = 0,
        sample: bool = False,
        device: str = "auto",
        precision: str = "auto",
    ):
        gym.utils.RecordConstructorArgs.__init__(
            self,
            model=str(model) if isinstance(model, (str, Path)) else model,
            frame_stack=frame_stack,
            action_history=action_history,
            sample=sample,
            device=device,
            precision=precision,
        )
        gym.Wrapper.__init__(self, env)
        self.model = resolve_model(model, device)
        check_frame_space("LatentObservation", env.observation_space, self.model)
        self.sample = sample
        self.precision = resolve_precision(precision, getattr(self.model, "device", "cpu"))
        self.history = LatentHistory(
            1, self.model.latent_dim, env.action_space, frame_stack, action_history
        )
        self.observation_space = self.history.space()
        self.last_frame: np.ndarray | None = None

    def _encode(self, frame: np.ndarray) -> np.ndarray:
        self.last_frame = frame
        with autocast(getattr(self.model, "device", "cpu"), self.precision):
            return self.model.encode(frame, sample=self.sample)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        frame, info = self.env.reset(seed=seed, options=options)
        self.history.reset(0, self._encode(frame))
        return self.history.observation(0), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        frame, reward, terminated, truncated, info = self.env.step(action)
        self.history.push(0, self._encode(frame), action)
        return self.history.observation(0), reward, terminated, truncated, info


class VecLatentObservation(VecEnvWrapper):
    """Encode the frames of all envs of an SB3 VecEnv in one batched call.

    Same arguments and observations as :class:`LatentObservation`; ``infos[i]
    ["terminal_observation"]`` is replaced by its latent observation too (what the agent would
    have seen), as ``VecTransposeImage`` does for transposed frames. ``last_frames`` keeps the
    latest uint8 frames ``(N, H, W, C)`` for videos.
    """

    def __init__(
        self,
        venv: VecEnv,
        model: Encoder | str | Path,
        frame_stack: int = 1,
        action_history: int = 0,
        sample: bool = False,
        device: str = "auto",
        precision: str = "auto",
    ):
        self.model = resolve_model(model, device)
        check_frame_space("VecLatentObservation", venv.observation_space, self.model)
        self.sample = sample
        self.precision = resolve_precision(precision, getattr(self.model, "device", "cpu"))
        self.history = LatentHistory(
            venv.num_envs, self.model.latent_dim, venv.action_space, frame_stack, action_history
        )
        super().__init__(venv, observation_space=self.history.space())
        self._actions: np.ndarray | None = None
        self.last_frames: np.ndarray | None = None

    def _encode(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        with autocast(getattr(self.model, "device", "cpu"), self.precision):
            return self.model.encode(np.asarray(frames), sample=self.sample)

    def _stacked(self) -> np.ndarray:
        return np.stack([self.history.observation(i) for i in range(self.num_envs)])

    def reset(self) -> VecEnvObs:
        frames = self.venv.reset()
        assert isinstance(frames, np.ndarray)
        self.last_frames = frames
        z = self._encode(frames)
        for i in range(self.num_envs):
            self.history.reset(i, z[i])
        return self._stacked()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        frames, rewards, dones, infos = self.venv.step_wait()
        assert isinstance(frames, np.ndarray) and self._actions is not None
        self.last_frames = frames
        z, done_idx, z_terminal = encode_step(self._encode, frames, dones, infos)
        for j, i in enumerate(done_idx):
            self.history.push(i, z_terminal[j], self._actions[i])
            infos[i]["terminal_observation"] = self.history.observation(i)
        for i in range(self.num_envs):
            if dones[i]:
                self.history.reset(i, z[i])
            else:
                self.history.push(i, z[i], self._actions[i])
        return self._stacked(), rewards, dones, infos
