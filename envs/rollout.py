"""Playing one episode of an env with a policy: the step that the local collector's workers
(:mod:`envs.collector`) and the Ray tasks (:mod:`envs.ray_collect`) share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from worldvae.data.episodes import Episode

_PROGRESS_EVERY = 64  # steps between progress messages from a worker


def play_episode(
    env: Any,
    policy: Any,
    seed: int,
    progress: Any = None,
    state_fn: Callable[[Any], np.ndarray] | None = None,
) -> Episode:
    """Play one episode of ``env`` with ``policy`` from ``reset(seed=seed)``.

    ``state_fn(env)`` (see :func:`envs.state.state_reader`) records the env's true state
    beside each frame as the episode's ``states`` ``(T + 1, S)``.
    """
    policy.reset(seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards, terminated, truncated = [obs], [], [], [], []
    states = [state_fn(env)] if state_fn is not None else []
    while True:
        action = policy.act(obs)
        obs, reward, term, trunc, _ = env.step(action)
        if state_fn is not None:
            states.append(state_fn(env))
        frames.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        if progress is not None and len(rewards) % _PROGRESS_EVERY == 0:
            progress(_PROGRESS_EVERY)
        if term or trunc:
            break
    if progress is not None:
        progress(len(rewards) % _PROGRESS_EVERY + 1)
    return Episode(
        frames=np.stack(frames),
        actions=np.asarray(actions),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=np.asarray(terminated, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool),
        seed=seed,
        states=np.stack(states).astype(np.float32) if state_fn is not None else None,
    )
