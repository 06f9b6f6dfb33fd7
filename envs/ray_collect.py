"""Collection on a Ray cluster: one Ray task per episode, written by the same atomic writer.

Episode ``i`` is a pure function of ``(env, options, policy, seed, i)``, so a task can run on
any node, be retried after its worker dies (Ray re-runs it; the half-written file is only a
temporary one) and give the same file as a local worker. A killed driver loses only the
episodes in flight: re-running the command keeps every finished file and plays the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from envs.cluster import cluster_cpus, connect_ray, run_tasks
from envs.factory import make_env
from envs.policies import PolicyFactory
from envs.rollout import play_episode
from envs.state import state_reader
from worldvae.data.manifest import episode_seed
from worldvae.data.writer import write_dataset_episode
from worldvae.envspec import EnvSpec

logger = logging.getLogger(__name__)

TASK_RETRIES = 3  # re-runs of an episode whose worker process or node died


def play_and_write(
    env_spec: EnvSpec,
    policy: PolicyFactory,
    master_seed: int,
    index: int,
    dataset_dir: str,
    compress: bool = True,
    record_state: bool = False,
) -> int:
    """Build the env and policy, play episode ``index``, write it atomically; return its frames.

    The body of one Ray task. Building the env per episode costs milliseconds against an
    episode's seconds, and keeps a task free of state from earlier ones.
    """
    env = make_env(env_spec)
    try:
        actor = policy.build(env.action_space, env.observation_space)
        state_fn = state_reader(env_spec.env_id) if record_state else None
        episode = play_episode(env, actor, episode_seed(master_seed, index), state_fn=state_fn)
    finally:
        env.close()
    return write_dataset_episode(dataset_dir, index, episode, compress)


def play_on_ray(
    cluster: str,
    env_spec: EnvSpec,
    policy: PolicyFactory,
    master_seed: int,
    dataset_dir: Path,
    todo: Iterator[int],
    on_done: Callable[[int, int], bool],
    n_workers: int | None = None,
    compress: bool = True,
    record_state: bool = False,
) -> None:
    """Play the episodes ``todo`` hands out as Ray tasks, one CPU each.

    ``on_done(index, n_frames)`` runs on the driver as each episode's file is written and
    returns False once the budget is met. At most ``n_workers`` episodes run at once (None:
    as many as the cluster has CPUs). Tasks still running at the end are cancelled and waited
    for, so none writes after this returns.

    Raises:
        RuntimeError: an episode failed after Ray's retries; the message names it.
    """
    ray = connect_ray(cluster)
    limit = n_workers or cluster_cpus(ray)
    remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(play_and_write)
    logger.info("collecting %s on Ray, %d episodes in flight", env_spec.env_id, limit)

    def args_of(index: int) -> tuple[Any, ...]:
        return (
            env_spec, policy, master_seed, index, str(dataset_dir), compress, record_state
        )  # fmt: skip

    run_tasks(ray, remote, todo, args_of, limit, on_done, describe=lambda i: f"episode {i}")
