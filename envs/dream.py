"""``DreamEnv``: a gymnasium env that runs entirely inside M (World Models section 4.4).

An episode starts from a real start latent (the first frame of a recorded episode, as encoded
by V) with M's state at zero; each step M reads ``(z_t, a_t)``, predicts the reward and the done
flag, and the next latent is sampled from its mixture at temperature ``tau``. Observations are
``[z, h]``, the same as the ``latent+h`` wrappers give in the real env, so an agent trained in
the dream acts in the real env unchanged. A dream step costs one LSTM step, not a rendered
frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch

from envs.memory import memory_space, resolve_memory
from worldvae.data.latents import ActionSpec, LatentDataset
from worldvae.memory import MDNRNN
from worldvae.memory.model import sample_next
from worldvae.models import Autoencoder


def start_latents_from(data: str | Path | np.ndarray) -> np.ndarray:
    """Start latents ``(N, D)``: an array as is, or the first-frame means of a latent dataset."""
    if isinstance(data, np.ndarray):
        return np.asarray(data, np.float32)
    mu, _ = LatentDataset(data, val_fraction=0.0).start_latents("all")
    return mu.astype(np.float32)


class DreamEnv(gym.Env):
    """Steps M at temperature ``tau``; rewards and ends come from M.

    Args:
        memory: M (loaded, or a memory model / ``train-rnn`` run directory).
        start_latents: ``(N, D)`` real start latents, or a latent dataset directory.
        action_space: the real env's action space (Discrete or Box), which M was trained on.
        temperature: ``tau`` (default: M's configured temperature).
        done_threshold: the episode ends when M's done probability exceeds this.
        max_episode_steps: truncation, as the real env's time limit.
        vae: decodes ``z`` for ``render()`` (``rgb_array``), optional.
        device: where models given as paths are loaded.

    Observation space: float32 ``Box((D + H,))``.

    Example:
        >>> env = DreamEnv("runs/rnn/cp", "runs/latents/cp", gym.spaces.Discrete(2))
        >>> obs, info = env.reset(seed=0)
    """

    def __init__(
        self,
        memory: MDNRNN | str | Path,
        start_latents: np.ndarray | str | Path,
        action_space: gym.Space,
        temperature: float | None = None,
        done_threshold: float = 0.5,
        max_episode_steps: int = 1000,
        vae: Autoencoder | None = None,
        render_mode: str | None = None,
        device: str = "cpu",
    ):
        from envs.memory import check_memory_fits

        self.memory = resolve_memory(memory, device)
        self.action_encoding: ActionSpec = check_memory_fits(
            "DreamEnv", self.memory, vae, action_space
        )
        starts = start_latents_from(start_latents)
        if starts.ndim != 2 or starts.shape[1] != self.memory.config.latent_dim or not len(starts):
            raise ValueError(
                f"DreamEnv needs start latents (N, {self.memory.config.latent_dim}), got "
                f"{starts.shape}; pass the latent dataset M was trained on"
            )
        self.starts = starts
        self.temperature = float(temperature or self.memory.config.temperature)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"DreamEnv renders 'rgb_array' only, got {render_mode!r}")
        if render_mode == "rgb_array" and vae is None:
            raise ValueError("DreamEnv(render_mode='rgb_array') needs vae= to decode the dream")
        self.metadata = {"render_modes": ["rgb_array"]}
        self.render_mode = render_mode
        self.vae = vae
        self.done_threshold = done_threshold
        self.max_episode_steps = max_episode_steps
        self.action_space = action_space
        self.observation_space = memory_space(self.memory)
        self._generator = torch.Generator(device=self.memory.device)
        self._z = torch.zeros(1, self.memory.config.latent_dim, device=self.memory.device)
        self._state = self.memory.initial_state(1)
        self._hidden = np.zeros(self.memory.config.hidden_size, np.float32)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._z[0].cpu().numpy(), self._hidden]).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._generator.manual_seed(int(self.np_random.integers(2**62)))
        i = int(self.np_random.integers(len(self.starts)))
        self._z = torch.from_numpy(self.starts[i][None].copy()).to(self.memory.device)
        self._state = self.memory.initial_state(1)
        self._hidden[:] = 0.0
        self._t = 0
        return self._obs(), {"start_index": i}

    @torch.inference_mode()
    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        a = torch.from_numpy(self.action_encoding.encode(np.asarray(action)[None])).to(
            self.memory.device
        )
        out, self._state = self.memory.step(self._z, a, self._state)
        reward = float(out.reward[0, -1])
        p_done = float(torch.sigmoid(out.done_logit[0, -1]))
        self._z = sample_next(out, self.temperature, self._generator)
        self._hidden = out.hidden[0, -1].float().cpu().numpy()
        self._t += 1
        terminated = p_done > self.done_threshold
        truncated = not terminated and self._t >= self.max_episode_steps
        return self._obs(), reward, terminated, truncated, {"done_probability": p_done}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self.vae is None:
            return None
        return np.asarray(self.vae.decode(self._z[0].cpu().numpy()))
