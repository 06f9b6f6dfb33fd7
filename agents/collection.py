"""Collect frames with a trained agent: World Models' second round of data, driven by C.

``worldvae collect --policy agent:RUN`` (or ``best-agent:RUN`` for the policy of the best
evaluation) plays episodes with the agent in ``RUN``. The collector hands the policy raw
frames; :class:`AgentActor` turns them into the agent's own observations through the same
wrappers its training env used (:func:`agents.environments.wrap_observations` over a one-env
:class:`FrameFeed`), so pixel stacks, latent codes with their history and ``[z, h]`` start
each episode exactly as in training. The env is made from the agent's recorded env spec.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from agents.agent_config import AgentConfig
from agents.algorithms import get_algorithm
from agents.arms import get_arm
from agents.bundle import AGENT_FILE, BEST_AGENT_FILE, load_bundle, read_agent_info
from agents.environments import ExplorationNoise, is_recurrent, wrap_observations
from worldvae.envspec import EnvSpec

PREFIXES = {"agent": "final", "best-agent": "best"}


class FrameFeed(VecEnv):
    """A one-env VecEnv that returns the frames it is given: ``reset``/``step`` hand back the
    frame last passed to :meth:`feed` (reward 0, never done). Observation wrappers stacked on
    it turn a stream of frames from elsewhere into an agent's observations."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space):
        super().__init__(1, observation_space, action_space)
        self.frame: np.ndarray | None = None

    def feed(self, frame: np.ndarray) -> None:
        self.frame = np.asarray(frame)[None]

    def _frame(self) -> np.ndarray:
        if self.frame is None:
            raise RuntimeError("FrameFeed: feed() a frame before reset() or step()")
        return self.frame

    def reset(self) -> VecEnvObs:
        return self._frame()

    def step_async(self, actions: np.ndarray) -> None:
        pass

    def step_wait(self) -> VecEnvStepReturn:
        return self._frame(), np.zeros(1, np.float32), np.zeros(1, bool), [{}]

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [None]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        pass

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kw: Any) -> list:
        return [None]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False]


class AgentActor:
    """Actions of a loaded agent bundle for one env's raw frames (the collector's policy).

    Args:
        path: the agent directory (from ``train-agent``, ``compare`` or ``pipeline``).
        which: ``"final"`` or ``"best"`` (the policy of the best periodic evaluation).
        observation_space, action_space: the collection env's (uint8 ``(H, W, C)`` frames).
        deterministic: the policy's mode instead of samples (samples by default: a round of
            data wants the agent's spread, not one line per track).
    """

    def __init__(
        self,
        path: str | Path,
        which: str,
        observation_space: gym.Space,
        action_space: gym.Space,
        deterministic: bool = False,
    ):
        bundle = load_bundle(path, device="cpu", which=which)
        self.agent, self.deterministic = bundle.agent, deterministic
        self.feed = FrameFeed(observation_space, action_space)
        self.venv = wrap_observations(bundle.config, self.feed, bundle.model, bundle.memory)
        expected = self.agent.observation_space
        if self.venv.observation_space.shape != _channels_last(expected):
            raise ValueError(
                f"the agent in {path} acts on observations of shape "
                f"{_channels_last(expected)}, the collection env's frames give "
                f"{self.venv.observation_space.shape}: collect with the agent's env options "
                "(leave --frame-size, --crop, --grayscale and --frame-skip unset)"
            )
        self.recurrent = is_recurrent(self.agent)
        self.noise = ExplorationNoise(self.agent, deterministic)
        self.steps = 0
        self.started = False
        self.last_action: np.ndarray | None = None
        self.state: Any = None

    def reset(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)  # sampled actions: an episode depends only on its seed
        self.agent.set_random_seed(seed)  # and DQN's epsilon draws (numpy, the action space)
        self.started, self.state, self.steps = False, None, 0

    def act(self, observation: np.ndarray) -> Any:
        self.feed.feed(observation)
        self.noise.before_step(self.steps)
        self.steps += 1
        if not self.started or self.last_action is None:
            obs = self.venv.reset()
        else:
            obs = self.venv.step(self.last_action)[0]
        if self.recurrent:
            start = np.array([not self.started])
            action, self.state = self.agent.predict(
                obs, state=self.state, episode_start=start, deterministic=self.deterministic
            )
        else:
            action, _ = self.agent.predict(obs, deterministic=self.deterministic)
        self.started, self.last_action = True, action
        return action[0]


def _channels_last(space: gym.Space) -> tuple[int, ...]:
    """An observation shape as the env gives it (SB3 stores image spaces channels first)."""
    from stable_baselines3.common.preprocessing import is_image_space

    shape = tuple(space.shape or ())
    if isinstance(space, gym.spaces.Box) and is_image_space(space) and len(shape) == 3:
        c, h, w = shape
        if c < h and c < w:
            return (h, w, c)
    return shape


@dataclass(frozen=True)
class AgentPolicySpec:
    """A picklable collection policy that plays a trained agent (built in each worker).

    Attributes:
        path: the agent directory.
        which: ``"final"`` or ``"best"``.
        deterministic: act with the policy's mode instead of sampling.
    """

    path: str
    which: str = "final"
    deterministic: bool = False

    @classmethod
    def parse(cls, text: str) -> AgentPolicySpec | None:
        """``agent:PATH`` or ``best-agent:PATH``; None for other policy strings."""
        prefix, sep, path = text.partition(":")
        if not sep or prefix not in PREFIXES:
            return None
        if not path:
            raise ValueError(f"policy {text!r} must look like {prefix}:path/to/agent_dir")
        spec = cls(str(Path(path).resolve()), PREFIXES[prefix])
        spec.check()
        return spec

    def config(self) -> AgentConfig:
        """The agent's recorded configuration."""
        return AgentConfig.from_dict(read_agent_info(Path(self.path))["agent"])

    def check(self) -> None:
        """Refuse an agent that cannot act on frames, before any worker starts."""
        cfg = self.config()
        if get_arm(cfg.obs).wrap_env is not None:
            raise ValueError(
                f"the agent in {self.path} acts on the env's {cfg.obs} vector, not on frames; "
                "collect with a pixel, latent, encoder, pca, random or latent+h agent"
            )
        algorithm = get_algorithm(cfg.algo)
        if not algorithm.is_sb3:
            raise ValueError(
                f"the agent in {self.path} is a {algorithm.title}; collect with an SB3 agent"
            )

    def env_spec(self) -> EnvSpec:
        """The env spec the agent was trained on."""
        return self.config().env

    def build(
        self, action_space: gym.Space, observation_space: gym.Space | None = None
    ) -> AgentActor:
        if observation_space is None:
            raise ValueError("an agent policy needs the env's observation space")
        self.check()
        return AgentActor(
            self.path, self.which, observation_space, action_space, self.deterministic
        )

    def policy_sha256(self) -> str:
        """The sha256 of the policy file: a re-trained agent is another policy."""
        name = BEST_AGENT_FILE if self.which == "best" else AGENT_FILE
        return hashlib.sha256((Path(self.path) / name).read_bytes()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": "agent",
            "params": {
                "path": self.path,
                "which": self.which,
                "deterministic": self.deterministic,
                "sha256": self.policy_sha256(),
            },
        }
