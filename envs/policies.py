"""Action policies for the rollout collector.

A policy is built inside each worker from a picklable :class:`PolicySpec` and is reset with
the episode's seed, so an episode's actions depend only on that seed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ActionPolicy(Protocol):
    """Chooses actions for one env; ``reset`` is called at the start of every episode."""

    def reset(self, seed: int) -> None: ...

    def act(self, observation: np.ndarray) -> Any: ...


class PolicyFactory(Protocol):
    """What the collector takes as a policy: picklable, built once per worker, recorded in the
    manifest. :class:`PolicySpec` is one; ``agents.collection.AgentPolicySpec`` (a trained
    agent) is another."""

    def build(
        self, action_space: gym.Space, observation_space: gym.Space | None = None
    ) -> ActionPolicy: ...

    def to_dict(self) -> dict[str, Any]: ...


class RandomPolicy:
    """Uniform random actions from the action space."""

    def __init__(self, action_space: gym.Space):
        self.action_space = action_space

    def reset(self, seed: int) -> None:
        self.action_space.seed(seed)

    def act(self, observation: np.ndarray) -> Any:
        return self.action_space.sample()


class BrownianPolicy:
    """Temporally correlated random actions, for better state coverage than white noise.

    Continuous (Box) actions follow a clipped random walk ``a_t = clip(a_{t-1} + sigma * N(0, I))``
    started uniformly in the box, so a car keeps steering one way for a while and covers more
    of a track. Discrete actions are "sticky": the previous action is repeated with probability
    ``repeat_prob``, otherwise a new one is drawn uniformly.
    """

    def __init__(self, action_space: gym.Space, sigma: float = 0.2, repeat_prob: float = 0.8):
        if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
            raise ValueError(
                f"BrownianPolicy requires a Box or Discrete action space, got {action_space}"
            )
        self.action_space = action_space
        self.sigma = sigma
        self.repeat_prob = repeat_prob
        self.rng = np.random.default_rng(0)
        self.previous: Any = None

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.previous = None

    def act(self, observation: np.ndarray) -> Any:
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            if self.previous is None or self.rng.random() >= self.repeat_prob:
                self.previous = int(space.start + self.rng.integers(space.n))
            return self.previous
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        if self.previous is None:
            a = self.rng.uniform(low, high)
        else:
            a = self.previous + self.sigma * (high - low) / 2 * self.rng.standard_normal(
                space.shape
            )
        self.previous = np.clip(a, low, high)
        return self.previous.astype(space.dtype)


class SB3Policy:
    """Actions from a saved stable-baselines3 model (``.zip``) acting on the env's frames.

    Args:
        path: the SB3 zip file.
        algo: its algorithm name (``ppo``, ``a2c``, ``dqn``, ``sac``).
        frame_stack: stack this many last frames along channels, as the agent was trained.
        deterministic: greedy actions instead of samples.
    """

    def __init__(self, path: str, algo: str, frame_stack: int = 1, deterministic: bool = False):
        from envs.sb3_io import sb3_class

        if algo.lower() == "recurrentppo":  # its LSTM state would be dropped at every step
            raise ValueError("collecting with a recurrentppo agent is not supported; use ppo")
        self.path, self.algo_class = path, sb3_class(algo)
        self.model: Any = None
        self.frame_stack = frame_stack
        self.deterministic = deterministic
        self.frames: deque[np.ndarray] = deque(maxlen=frame_stack)

    def bind(self, observation_space: gym.Space, action_space: gym.Space) -> SB3Policy:
        """Load the agent for an env with these spaces (its frames stacked ``frame_stack`` times)."""
        from envs.sb3_io import load_sb3

        if not isinstance(observation_space, spaces.Box) or observation_space.shape is None:
            raise ValueError(f"SB3Policy needs a Box observation space, got {observation_space}")
        h, w, c = observation_space.shape
        stacked = spaces.Box(0, 255, (h, w, c * self.frame_stack), np.uint8)
        self.model = load_sb3(
            self.algo_class, self.path, stacked, action_space, "CnnPolicy", device="cpu"
        )
        return self

    def reset(self, seed: int) -> None:
        self.model.set_random_seed(seed)
        self.frames.clear()

    def act(self, observation: np.ndarray) -> Any:
        if not self.frames:  # zero frames before the first, as SB3's VecFrameStack starts
            self.frames.extend([np.zeros_like(observation)] * (self.frame_stack - 1))
        self.frames.append(observation)
        obs = np.concatenate(list(self.frames), axis=-1)
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return action


@dataclass(frozen=True)
class PolicySpec:
    """A picklable, JSON-ready description of an action policy.

    ``name`` is ``"random"``, ``"brownian"`` or ``"sb3"``; ``params`` are its keyword arguments
    (for ``"sb3"``: ``path``, ``algo``, optionally ``frame_stack`` and ``deterministic``).
    """

    name: str = "random"
    params: dict[str, Any] = field(default_factory=dict)

    def build(
        self, action_space: gym.Space, observation_space: gym.Space | None = None
    ) -> ActionPolicy:
        if self.name == "random":
            return RandomPolicy(action_space, **self.params)
        if self.name == "brownian":
            return BrownianPolicy(action_space, **self.params)
        if self.name == "sb3":
            if observation_space is None:
                raise ValueError("an sb3 policy needs the env's observation space")
            return SB3Policy(**self.params).bind(observation_space, action_space)
        raise ValueError(f"unknown policy {self.name!r}; choose random, brownian or sb3:ALGO:PATH")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        """Parse a command-line policy: ``random``, ``brownian`` or ``sb3:ALGO:PATH``."""
        if text in ("random", "brownian"):
            return cls(text)
        if text.startswith("sb3:"):
            parts = text.split(":", 2)
            if len(parts) != 3 or not parts[2]:
                raise ValueError(f"policy {text!r} must look like sb3:ppo:path/to/model.zip")
            return cls("sb3", {"algo": parts[1], "path": parts[2]})
        if text.startswith(("agent:", "best-agent:")):
            raise ValueError(
                f"policy {text!r}: from Python, pass agents.collection.AgentPolicySpec.parse(text) "
                "as the policy (the command line does this)"
            )
        raise ValueError(f"unknown policy {text!r}; choose random, brownian or sb3:ALGO:PATH")
