"""The true low-dimensional state of an env, read per frame: for probes and the ``state`` arm.

Each supported family exposes a few named factors as float32 ``(S,)``:

============== ==================================================================================
family         factors
============== ==================================================================================
classic        ``CartPole``: x, x_dot, theta, theta_dot; ``Pendulum``: cos_theta, sin_theta,
               theta_dot; ``Acrobot``: the six observation terms; ``MountainCar``: position,
               velocity; other classic-control envs: their ``unwrapped.state`` as state_0, ...
minigrid       agent_x, agent_y, dir_x, dir_y (the unit vector the agent faces), carrying (0/1)
car racing     car_x, car_y, cos_angle, sin_angle, speed (read from the Box2D hull)
============== ==================================================================================

Angles are given as cosine and sine so a linear probe can recover them (an angle wraps).
Envs of other families (Atari, unknown ids) have no state here: :func:`has_state` is False and
:func:`read_state` raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.registry import family_of

StateFn = Callable[[Any], np.ndarray]

_CLASSIC_NAMES: dict[str, tuple[str, ...]] = {
    "CartPole": ("x", "x_dot", "theta", "theta_dot"),
    "Pendulum": ("cos_theta", "sin_theta", "theta_dot"),
    "Acrobot": ("cos_theta1", "sin_theta1", "cos_theta2", "sin_theta2", "theta1_dot", "theta2_dot"),
    "MountainCar": ("position", "velocity"),
    "MountainCarContinuous": ("position", "velocity"),
}
MINIGRID_NAMES = ("agent_x", "agent_y", "dir_x", "dir_y", "carrying")
CARRACING_NAMES = ("car_x", "car_y", "cos_angle", "sin_angle", "speed")
_DIR_TO_VEC = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)  # MiniGrid's 0..3


def _base_name(env_id: str) -> str:
    return env_id.split("/")[-1].split("-v")[0]


def _classic_state(unwrapped: Any) -> np.ndarray:
    name = type(unwrapped).__name__
    if name == "PendulumEnv":  # the observation is the angle-free form of the state
        return np.asarray(unwrapped._get_obs(), np.float32)
    if name == "AcrobotEnv":
        return np.asarray(unwrapped._get_ob(), np.float32)
    if getattr(unwrapped, "state", None) is None:
        raise ValueError(f"{name} has no state yet: reset the env before reading its state")
    return np.asarray(unwrapped.state, np.float32).reshape(-1)


def _minigrid_state(unwrapped: Any) -> np.ndarray:
    x, y = unwrapped.agent_pos
    dx, dy = _DIR_TO_VEC[int(unwrapped.agent_dir) % 4]
    carrying = 0.0 if unwrapped.carrying is None else 1.0
    return np.array([x, y, dx, dy, carrying], np.float32)


def _carracing_state(unwrapped: Any) -> np.ndarray:
    if getattr(unwrapped, "backend", None) == "envpool":
        raise ValueError(
            "CarRacing's state is read from gymnasium's Box2D objects, which envpool's C++ env "
            "does not expose; make the env with backend='gymnasium'"
        )
    car = getattr(unwrapped, "car", None)
    if car is None:
        raise ValueError("CarRacing has no car yet: reset the env before reading its state")
    hull = car.hull
    angle = float(hull.angle)
    vx, vy = hull.linearVelocity
    return np.array(
        [hull.position[0], hull.position[1], np.cos(angle), np.sin(angle), np.hypot(vx, vy)],
        np.float32,
    )


def state_names(env_id: str) -> tuple[str, ...] | None:
    """Factor names of ``env_id``'s state, or None when the env has no state reader.

    For a classic-control env without known names the names are found by building it once.
    """
    family = family_of(env_id)
    base = _base_name(env_id)
    if family == "minigrid":
        return MINIGRID_NAMES
    if family == "box2d":
        return CARRACING_NAMES if base == "CarRacing" else None
    if family != "classic":
        return None
    if base in _CLASSIC_NAMES:
        return _CLASSIC_NAMES[base]
    try:
        env = gym.make(env_id)
    except Exception:
        return None
    try:
        env.reset(seed=0)
        state = getattr(env.unwrapped, "state", None)
        if state is None:
            return None
        return tuple(f"state_{i}" for i in range(np.asarray(state).size))
    finally:
        env.close()


def has_state(env_id: str) -> bool:
    """Whether :func:`read_state` can read ``env_id``'s true state."""
    return state_names(env_id) is not None


def state_reader(env_id: str) -> StateFn:
    """A function from an env of ``env_id`` (any wrapping) to its state, float32 ``(S,)``.

    Raises:
        ValueError: the env has no state reader (e.g. Atari), naming the families that do.
    """
    family = family_of(env_id)
    if state_names(env_id) is None:
        raise ValueError(
            f"{env_id!r} has no known low-dimensional state; state is read for classic-control "
            "envs, MiniGrid and CarRacing (drop 'state' from --obs, or --no-record-state)"
        )
    fn: Callable[[Any], np.ndarray] = {
        "classic": _classic_state,
        "minigrid": _minigrid_state,
        "box2d": _carracing_state,
    }[family]
    return lambda env: fn(env.unwrapped)


def read_state(env: gym.Env, env_id: str | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """The true state of ``env`` as float32 ``(S,)`` and its factor names.

    Args:
        env: a reset env of a supported family, wrapped in any way (``make_env``'s wrappers).
        env_id: its id; read from ``env.spec`` when omitted.

    Raises:
        ValueError: the env's family has no state reader, or the env was not reset.
    """
    if env_id is None:
        if env.spec is None:
            raise ValueError("read_state needs env_id for an env without a spec")
        env_id = env.spec.id
    names = state_names(env_id)
    state = state_reader(env_id)(env)
    assert names is not None  # state_reader raised otherwise
    if state.shape != (len(names),):
        raise ValueError(f"{env_id} gave a state of shape {state.shape}, expected ({len(names)},)")
    return state, names


class StateObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Replace an env's observation with its true state, float32 ``Box((S,))``.

    The env underneath still renders frames (the same wrappers as the pixel arm, so action
    repeat and time limits match); the agent sees only the state.

    Args:
        env: an env from :func:`envs.make_env`.
        env_id: its id (read from ``env.spec`` when omitted).
    """

    def __init__(self, env: gym.Env, env_id: str | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, env_id=env_id)
        gym.ObservationWrapper.__init__(self, env)
        env_id = env_id or (env.spec.id if env.spec else None)
        if env_id is None:
            raise ValueError("StateObservation needs env_id for an env without a spec")
        names = state_names(env_id)
        if names is None:
            state_reader(env_id)  # raises the explanatory error
        self.env_id = env_id
        self.names: tuple[str, ...] = names or ()
        self._read = state_reader(env_id)
        self.observation_space = spaces.Box(-np.inf, np.inf, (len(self.names),), np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        return self._read(self.env)
