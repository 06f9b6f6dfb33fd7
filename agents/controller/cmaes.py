"""World Models' controller C: a map from ``[z, h]`` to actions (linear, or with one hidden
layer), trained by CMA-ES.

Ha and Schmidhuber (2018) train C with CMA-ES on the cumulative reward, each candidate scored
over several rollouts, the population evaluated in parallel. Here the rollouts run in the real
env (through the ``latent+h`` wrapper) or in M's dream (:class:`~envs.dream_env.DreamEnv`); either
way the periodic evaluation, like every agent's, is in the real env on fixed seeds. Worker
processes (or, with ``cluster: ray``, Ray actors anywhere on a cluster) each build their env
once and score the candidates handed to them; or, with ``batched: true``, one VecEnv in this
process steps every candidate's rollouts together (:class:`BatchedScorer`; in the dream, one
batched M step for all of them).
Every candidate of a generation meets the same episode seeds, so where a candidate is scored
does not change its fitness.

The bundle holds ``controller.safetensors`` (``weight`` ``(A_out, obs_dim)``, ``bias``
``(A_out,)``; with a hidden layer of ``H`` units also ``hidden.weight`` ``(H, obs_dim)`` and
``hidden.bias`` ``(H,)``, and ``weight`` is ``(A_out, H)``) instead of an SB3 zip.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from stable_baselines3.common.vec_env import VecEnv

from agents.agent_checkpoint import CHECKPOINT_DIR
from agents.agent_checkpoint import STATE as STATE_FILE
from agents.progress import advance, budget_bar, count
from envs.dream_env import DreamVecEnv
from worldvae.atomic import atomic_dir, atomic_open, atomic_path, write_json
from worldvae.config_fields import reject_unknown_keys
from worldvae.workers import (
    check_local_workers,
    children_ignore_sigint,
    exit_with_parent,
    get_while_parent_lives,
)

logger = logging.getLogger(__name__)

CONTROLLER_FILE = "controller.safetensors"
# the mean candidate of the best periodic evaluation on the held-out tracks (eval_seed on), or
# with a shortlist the one of its best evaluations that scored best on the choosing tracks
BEST_CONTROLLER_FILE = "best_controller.safetensors"
# every evaluated mean candidate, by its step: what a shortlist chooses among
EVALUATED_DIR = "evaluated"
# the shortlist's candidates on the choosing tracks, and which was kept
CHOICE_CSV = "choice.csv"
# the shortlist's tracks start here past the evaluation seed (never the evaluation tracks, and
# far from the canonical ones); a PPO driver's way of acting is chosen there too
CHOICE_SEED_OFFSET = 1_000


@dataclass(frozen=True)
class CMAESConfig:
    """CMA-ES settings (the ``cmaes`` section of the hyperparameters).

    Attributes:
        popsize: candidates per generation (World Models: 64 on CarRacing).
        rollouts: episodes per candidate (World Models: 16); its fitness is their mean return.
        sigma0: initial step size.
        workers: processes (or Ray actors) scoring candidates in parallel (1 and local: in
            this process).
        n_envs: unused by CMA-ES; accepted so the shared ``n_envs`` key stays valid.
        cluster: ``"local"`` (worker processes), or ``"ray"`` / a Ray address: ``workers``
            Ray actors of one CPU each, anywhere on the cluster (see ``docs/scaling.md``).
        hidden: units of C's hidden layer (0: linear C, World Models' own; > 0: its "V + hidden
            layer" controller, see :class:`Controller`).
        batched: score a generation on one VecEnv in this process (:class:`BatchedScorer`:
            every candidate's rollouts stepped together; in the dream one batched M step for
            all of them), with the per-env scorers' fitnesses (up to float rounding in the
            dream); ``workers`` and ``cluster`` are then unused.
        batch_envs: the most envs of the batched scorer's VecEnv, and of the shortlist's
            (which plays batched whatever ``batched`` says, in rounds when it has more
            episodes).
        shortlist: after training, re-score the mean candidates of the run's ``shortlist``
            best periodic evaluations on ``shortlist_episodes`` other held-out tracks and keep
            the best of them as the best controller (0: the best evaluation's, as it stands).
            A choice on a few tracks is a draw: the same candidate's mean return moves by
            about its std over tracks / sqrt(tracks).
        shortlist_episodes: tracks of the shortlist's choice (from the evaluation seed + 1000).
    """

    popsize: int = 16
    rollouts: int = 4
    sigma0: float = 0.1
    workers: int = 2
    n_envs: int = 1
    cluster: str = "local"
    hidden: int = 0
    batched: bool = False
    batch_envs: int = 64
    shortlist: int = 0
    shortlist_episodes: int = 20

    def __post_init__(self) -> None:
        from envs.cluster import check_cluster, uses_ray

        check_cluster(self.cluster)
        for name in ("popsize", "rollouts", "workers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"cmaes {name} must be >= 1, got {getattr(self, name)}")
        for name, least in (
            ("hidden", 0),
            ("batch_envs", 1),
            ("shortlist", 0),
            ("shortlist_episodes", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"cmaes {name} must be an integer >= {least}, got {value!r}")
        if not isinstance(self.batched, bool):
            raise ValueError(f"cmaes batched must be true or false, got {self.batched!r}")
        if self.batched and uses_ray(self.cluster):
            raise ValueError(
                "cmaes batched scores in this process: it takes cluster 'local', got "
                f"{self.cluster!r}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CMAESConfig:
        reject_unknown_keys(cls, d, "cmaes hyperparameter")
        return cls(**d)


class Controller:
    """World Models' controller C on the ``[z, h]`` observation ``x`` ``(obs_dim,)``.

    Linear (``hidden == 0``): ``y = W x + b``. With one hidden layer of ``hidden`` units:
    ``y = W tanh(W1 x + b1) + b``. Then ``a = argmax(y)`` for Discrete actions and
    ``low + (tanh(y) + 1) / 2 * (high - low)`` for Box actions.

    The flat parameter vector CMA-ES searches is ``[W1, b1, W, b]`` (each flattened row-major;
    ``W1``, ``b1`` empty when linear, so a linear controller's vector is ``[W, b]`` as it always
    was). All parameters start at zero: CMA-ES samples its first candidates around that mean
    with step ``sigma0``, so no candidate has a zero ``W1`` and no symmetry needs breaking.

    Attributes:
        hidden_weight: ``W1`` ``(hidden, obs_dim)`` (``(0, obs_dim)`` when linear).
        hidden_bias: ``b1`` ``(hidden,)``.
        weight: ``W`` ``(A_out, hidden or obs_dim)``.
        bias: ``b`` ``(A_out,)``.
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.Space,
        params: np.ndarray | None = None,
        hidden: int = 0,
    ):
        if isinstance(action_space, spaces.Discrete):
            self.n_out = int(action_space.n)
        elif isinstance(action_space, spaces.Box):
            self.n_out = int(np.prod(action_space.shape or ()))
        else:
            raise ValueError(
                f"the CMA-ES controller needs Discrete or Box actions, got {action_space}"
            )
        if int(hidden) < 0:
            raise ValueError(f"the controller's hidden layer needs >= 0 units, got {hidden}")
        self.obs_dim, self.action_space, self.hidden = obs_dim, action_space, int(hidden)
        self.in_dim = self.hidden or obs_dim  # the width the output layer reads
        self.hidden_weight: np.ndarray = np.zeros((self.hidden, obs_dim), np.float32)
        self.hidden_bias: np.ndarray = np.zeros(self.hidden, np.float32)
        self.weight: np.ndarray = np.zeros((self.n_out, self.in_dim), np.float32)
        self.bias: np.ndarray = np.zeros(self.n_out, np.float32)
        if params is not None:
            self.set_params(params)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The saved tensors' names and shapes, in the order of the parameter vector."""
        out: dict[str, tuple[int, ...]] = {}
        if self.hidden:
            out = {"hidden.weight": (self.hidden, self.obs_dim), "hidden.bias": (self.hidden,)}
        return out | {"weight": (self.n_out, self.in_dim), "bias": (self.n_out,)}

    def tensors(self) -> dict[str, np.ndarray]:
        """The parameters by their saved names (see :meth:`shapes`)."""
        every = {
            "hidden.weight": self.hidden_weight,
            "hidden.bias": self.hidden_bias,
            "weight": self.weight,
            "bias": self.bias,
        }
        return {k: every[k] for k in self.shapes()}

    def set_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        """Take the parameters from ``tensors`` (the names and shapes of :meth:`shapes`)."""
        params = [np.asarray(tensors[k], np.float32).reshape(-1) for k in self.shapes()]
        self.set_params(np.concatenate(params))

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes().values())

    def set_params(self, params: np.ndarray) -> None:
        """Take the flat vector ``(n_params,)`` ``[W1, b1, W, b]``."""
        params = np.asarray(params, np.float32)
        if params.shape != (self.n_params,):
            raise ValueError(f"expected {self.n_params} parameters, got {params.shape}")
        parts, at = {}, 0
        for name, shape in self.shapes().items():
            size = int(np.prod(shape))
            parts[name] = params[at : at + size].reshape(shape).copy()
            at += size
        if self.hidden:
            self.hidden_weight, self.hidden_bias = parts["hidden.weight"], parts["hidden.bias"]
        self.weight, self.bias = parts["weight"], parts["bias"]

    def params(self) -> np.ndarray:
        """The flat vector ``(n_params,)`` ``[W1, b1, W, b]``."""
        return np.concatenate([t.reshape(-1) for t in self.tensors().values()])

    def predict(
        self,
        obs: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Actions for a batch of observations ``(N, obs_dim)`` (SB3's ``predict`` shape)."""
        x = np.asarray(obs, np.float32).reshape(-1, self.obs_dim)
        if self.hidden:
            x = np.tanh(x @ self.hidden_weight.T + self.hidden_bias)
        return to_actions(x @ self.weight.T + self.bias, self.action_space), None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(self.tensors(), str(tmp))


# The name of the controller before it could have a hidden layer; importers keep it.
LinearController = Controller


def to_actions(y: np.ndarray, action_space: gym.Space) -> np.ndarray:
    """The actions of the controller outputs ``y`` ``(N, A_out)``: ``(N,)`` indices for
    Discrete, ``(N, *shape)`` float32 for Box."""
    if isinstance(action_space, spaces.Discrete):
        indices: np.ndarray = y.argmax(axis=1) + int(action_space.start)
        return indices
    assert isinstance(action_space, spaces.Box)
    low, high = action_space.low.reshape(-1), action_space.high.reshape(-1)
    a = low + (np.tanh(y) + 1.0) / 2.0 * (high - low)
    return a.reshape(-1, *action_space.shape).astype(np.float32)


class ControllerBatch:
    """``K`` controllers of one architecture, each acting in its own env: one batched matmul
    per layer for all of them.

    Each row's action equals :meth:`Controller.predict` of that row's controller on that row's
    observation alone: the stacked matmul multiplies each row as a ``(1, in)`` by ``(in, out)``
    product, the same operands and layout as the single controller's.
    """

    def __init__(self, template: Controller, params: np.ndarray):
        """``params`` ``(K, n_params)``: each row a flat vector of ``template``'s layout."""
        params = np.asarray(params, np.float32)
        self.template = template
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []  # (W (K, out, in), b (K, 1, out))
        rows = []
        for p in params:
            template.set_params(p)
            rows.append(template.tensors())
        names = list(template.shapes())
        for w, b in zip(names[::2], names[1::2], strict=True):
            weight = np.stack([r[w] for r in rows])
            self.layers.append((weight, np.stack([r[b] for r in rows])[:, None, :]))

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Actions for ``obs`` ``(K, obs_dim)``, row ``k`` by controller ``k``."""
        x = np.asarray(obs, np.float32).reshape(len(self.layers[0][0]), 1, -1)
        for i, (weight, bias) in enumerate(self.layers):
            if i:
                x = np.tanh(x)
            x = np.matmul(x, weight.transpose(0, 2, 1)) + bias
        return to_actions(x[:, 0, :], self.template.action_space)


def _describe(shapes: dict[str, Any]) -> str:
    items = [f"{k} {s}" for k, s in shapes.items()]
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def load_controller(
    bundle: str | Path, observation_space: gym.Space, action_space: gym.Space, which: str = "final"
) -> Controller:
    """The controller of a CMA-ES bundle (safetensors; nothing is unpickled): ``"final"``, the
    mean candidate at the end of training, or ``"best"``, the one of its best periodic
    evaluation (with a shortlist, the one of its best evaluations that did best on the
    shortlist's tracks). Its architecture comes from the file: a ``hidden.weight`` ``(H, obs_dim)``
    gives a hidden layer of ``H``.

    Raises:
        FileNotFoundError: ``"best"`` asked of a bundle that kept none.
        ValueError: the file is unreadable, its tensors or shapes do not fit the spaces, or it
            holds NaN or infinity (the file named).
    """
    path = Path(bundle) / (BEST_CONTROLLER_FILE if which == "best" else CONTROLLER_FILE)
    if which == "best" and not path.is_file():
        raise FileNotFoundError(
            f"{bundle} kept no best controller ({BEST_CONTROLLER_FILE}: controllers trained "
            "before it was kept have only their final one); use the final controller"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable controller file ({e}); re-train it") from e
    obs_dim = int(np.prod(observation_space.shape or ()))
    first = tensors.get("hidden.weight")
    hidden = int(first.shape[0]) if first is not None and first.ndim == 2 else 0
    c = Controller(obs_dim, action_space, hidden=hidden)
    expected = c.shapes()
    found = {k: tensors[k].shape if k in tensors else None for k in expected}
    found |= {k: v.shape for k, v in tensors.items()}
    if found != expected:
        raise ValueError(
            f"{path}: controller {_describe(found)} do not fit observations ({obs_dim},) and "
            f"{action_space} (expected {_describe(expected)})"
        )
    if not all(np.isfinite(tensors[k]).all() for k in expected):
        raise ValueError(
            f"{path} holds non-finite weights (NaN or infinity); the controller is damaged: "
            "re-train it"
        )
    c.set_tensors(tensors)
    return c


def rollouts(controller: Controller, venv: VecEnv, n: int, seed: int) -> tuple[float, int]:
    """Mean return of ``n`` episodes seeded ``seed + i`` and the env steps they took."""
    total, steps = 0.0, 0
    for i in range(n):
        venv.seed(seed + i)
        obs = venv.reset()
        done = False
        while not done:
            action, _ = controller.predict(np.asarray(obs))
            obs, reward, dones, _ = venv.step(action)
            total += float(reward[0])
            steps += 1
            done = bool(dones[0])
    return total / n, steps


def build_scoring_env(spec: dict[str, Any]) -> VecEnv:
    """The VecEnv candidates are scored in (the dream or the real ``latent+h`` env), built by
    the spec's ``make_env`` (see :class:`agents.algorithms.TrainRun`): one env, or
    ``spec["n_envs"]`` for the batched scorer."""
    venv: VecEnv = spec["make_env"](spec)
    return venv


def spec_controller(spec: dict[str, Any], action_space: gym.Space) -> Controller:
    """A zero controller of the spec's architecture (``obs_dim``, ``hidden``)."""
    return Controller(int(spec["obs_dim"]), action_space, hidden=int(spec.get("hidden", 0)))


def _worker(spec: dict[str, Any], jobs: Any, results: Any, parent_pid: int) -> None:
    exit_with_parent(parent_pid)  # the trainer killed (OOM, kill -9) takes its workers along
    torch.set_num_threads(1)
    venv = build_scoring_env(spec)
    controller = spec_controller(spec, venv.action_space)
    while True:
        job = get_while_parent_lives(jobs, parent_pid)
        if job is None:
            break
        index, params, seed = job
        controller.set_params(params)
        results.put((index, *rollouts(controller, venv, int(spec["rollouts"]), seed)))
    venv.close()


class CandidateScorer:
    """Scores parameter vectors: in worker processes, or in this process with one worker."""

    def __init__(self, spec: dict[str, Any], workers: int):
        self.spec = spec
        self.workers = workers
        self.procs: list[Any] = []
        self.in_flight = False  # candidates handed out and not all scored
        if workers > 1:
            check_local_workers(workers, "workers")
            ctx = mp.get_context("spawn")
            self.jobs, self.results = ctx.Queue(), ctx.Queue()
            self.procs = [
                ctx.Process(
                    target=_worker, args=(spec, self.jobs, self.results, os.getpid()), daemon=True
                )
                for _ in range(workers)
            ]
            with children_ignore_sigint():
                for p in self.procs:
                    p.start()
        else:
            self.venv = build_scoring_env(spec)
            self.controller = spec_controller(spec, self.venv.action_space)

    def score(self, candidates: list[np.ndarray], seed: int) -> tuple[list[float], int]:
        """Mean return of each candidate over the same ``rollouts`` seeds, and total steps."""
        if not self.procs:
            out = []
            for c in candidates:
                self.controller.set_params(c)
                out.append(rollouts(self.controller, self.venv, int(self.spec["rollouts"]), seed))
        else:
            self.in_flight = True
            for i, c in enumerate(candidates):
                self.jobs.put((i, np.asarray(c, np.float32), seed))
            got: dict[int, tuple[float, int]] = {}
            while len(got) < len(candidates):
                if not any(p.is_alive() for p in self.procs):
                    raise RuntimeError("every CMA-ES worker process died; see the log above")
                try:
                    i, fitness, steps = self.results.get(timeout=5.0)
                except queue.Empty:  # check the workers again
                    continue
                got[i] = (fitness, steps)
            out = [got[i] for i in range(len(candidates))]
            self.in_flight = False
        return [f for f, _ in out], sum(s for _, s in out)

    def close(self) -> None:
        """Stop the workers: at once when candidates are still in flight (an interrupted
        generation), else after they finish."""
        for _ in self.procs:
            self.jobs.put(None)
        for p in self.procs:
            p.join(timeout=0.5 if self.in_flight else 30)
            if p.is_alive():
                p.terminate()
                p.join()
        if not self.procs:
            self.venv.close()


def seed_each(venv: VecEnv, seeds: list[int]) -> None:
    """Seed env ``i`` of ``venv`` with ``seeds[i]`` at its next ``reset()``.

    SB3's VecEnvs (and :class:`~envs.envpool_env.EnvpoolVecEnv`) keep the seeds of the next
    reset in the innermost VecEnv's ``_seeds``, one per env; ``venv.seed(s)`` fills it with
    ``s + i``. This sets any list. M's dream (:class:`~envs.dream_env.DreamVecEnv`) takes them
    through its own ``seed_each``.

    Raises:
        TypeError: the innermost VecEnv keeps no per-env seeds.
    """
    base = venv.unwrapped
    if isinstance(base, DreamVecEnv):
        base.seed_each(seeds)
        return
    if len(getattr(base, "_seeds", ())) != venv.num_envs or len(seeds) != venv.num_envs:
        raise TypeError(
            f"{type(base).__name__} takes no per-env seeds for {venv.num_envs} envs; "
            "score CMA-ES candidates with batched: false"
        )
    base._seeds = [int(s) for s in seeds]


class BatchedScorer:
    """Scores a generation's candidates on one VecEnv of ``K`` envs in this process.

    Each (candidate ``c``, rollout ``r``) is one job, run in an env seeded ``seed + r`` (the
    per-env scorer's seeds). The jobs run in waves of at most ``K``: a wave seeds every env,
    resets them together, and steps all of them with one batched controller predict
    (:class:`ControllerBatch`) and one VecEnv step (so the ``latent+h`` env encodes the frames
    and steps M once for all envs) until each env's episode has ended. An env whose episode has
    ended is still stepped with the others (a VecEnv steps all its envs) but its rewards and
    steps are not counted. Each candidate's fitness sums its rewards in the per-env scorer's
    order (rollout by rollout, step by step), so the fitnesses equal the per-env scorer's
    whenever the envs' observations do. In M's dream the envs of one rollout seed share that
    seed's draws (:meth:`envs.dream_env.DreamVecEnv.seed_each`), so every candidate meets the
    dreams it meets in the per-env scorer.

    ``K = ceil(jobs / waves)`` with ``waves = ceil(jobs / max_envs)`` and ``jobs = popsize *
    rollouts``: the fewest waves under the cap, the jobs spread evenly over them.
    """

    def __init__(self, spec: dict[str, Any], popsize: int, max_envs: int):
        self.rollouts = int(spec["rollouts"])
        jobs = popsize * self.rollouts
        self.n_envs = -(-jobs // -(-jobs // max_envs))
        self.venv = build_scoring_env(spec | {"n_envs": self.n_envs})
        self.template = spec_controller(spec, self.venv.action_space)

    def _wave(self, params: np.ndarray, seeds: list[int], live: int) -> list[list[float]]:
        """Run envs ``0 .. live - 1`` (controller ``params[i]`` ``(K, n_params)``, seed
        ``seeds[i]``) to the end of their episodes; return each one's rewards, step by step."""
        batch = ControllerBatch(self.template, params)
        seed_each(self.venv, seeds)
        obs = self.venv.reset()
        running = np.arange(self.n_envs) < live
        rewards: list[list[float]] = [[] for _ in range(live)]
        while running.any():
            obs, reward, dones, _ = self.venv.step(batch.predict(np.asarray(obs)))
            for i in np.flatnonzero(running):
                rewards[i].append(float(reward[i]))
            running &= ~np.asarray(dones, bool)
        return rewards

    def _rewards(self, candidates: list[np.ndarray], seed: int) -> list[list[float]]:
        """The rewards, step by step, of each (candidate, rollout) job in that order."""
        jobs = [(c, r) for c in range(len(candidates)) for r in range(self.rollouts)]
        rewards: list[list[float]] = []
        for start in range(0, len(jobs), self.n_envs):
            wave = jobs[start : start + self.n_envs]
            idle = self.n_envs - len(wave)  # envs of the last wave without a job: candidate 0's
            wave_jobs = wave + [(0, 0)] * idle
            params = np.stack([np.asarray(candidates[c], np.float32) for c, _ in wave_jobs])
            rewards += self._wave(params, [seed + r for _, r in wave_jobs], len(wave))
        return rewards

    def score(self, candidates: list[np.ndarray], seed: int) -> tuple[list[float], int]:
        """Mean return of each candidate over the same ``rollouts`` seeds, and total steps."""
        rewards = self._rewards(candidates, seed)
        fitness = []
        for c in range(len(candidates)):
            total = 0.0
            for episode in rewards[c * self.rollouts : (c + 1) * self.rollouts]:
                for x in episode:
                    total += x
            fitness.append(total / self.rollouts)
        return fitness, sum(len(e) for e in rewards)

    def returns(self, candidates: list[np.ndarray], seed: int) -> np.ndarray:
        """The return of each candidate's rollout ``r`` (seeded ``seed + r``) ``(C,
        rollouts)``, each summed in step order as an evaluation sums it."""
        rewards = self._rewards(candidates, seed)
        out = np.zeros((len(candidates), self.rollouts))
        for j, episode in enumerate(rewards):
            total = 0.0
            for x in episode:
                total += x
            out[j // self.rollouts, j % self.rollouts] = total
        return out

    def close(self) -> None:
        self.venv.close()


class _ScoringActor:
    """One Ray actor's scoring env and controller (built once, like a worker process's)."""

    def __init__(self, spec: dict[str, Any]):
        torch.set_num_threads(1)
        self.spec = spec
        self.venv = build_scoring_env(spec)
        self.controller = spec_controller(spec, self.venv.action_space)

    def score(self, params: np.ndarray, seed: int) -> tuple[float, int]:
        self.controller.set_params(params)
        return rollouts(self.controller, self.venv, int(self.spec["rollouts"]), seed)


class RayCandidateScorer:
    """Scores parameter vectors on ``workers`` Ray actors of one CPU each.

    Each actor builds its scoring env once; a generation's candidates go to whichever actor is
    free and come back in order. The fitness of a candidate equals the local scorer's (same
    params as float32, same episode seeds). The bundle, model and data must be on storage that
    every node sees at the same path.
    """

    def __init__(self, spec: dict[str, Any], workers: int, cluster: str):
        from ray.util import ActorPool

        from envs.cluster import connect_ray

        self.ray = connect_ray(cluster)
        actor = self.ray.remote(num_cpus=1)(_ScoringActor)
        self.actors = [actor.remote(spec) for _ in range(workers)]
        self.pool = ActorPool(self.actors)

    def score(self, candidates: list[np.ndarray], seed: int) -> tuple[list[float], int]:
        """Mean return of each candidate over the same ``rollouts`` seeds, and total steps."""
        params = [np.asarray(c, np.float32) for c in candidates]
        try:
            out = list(self.pool.map(lambda a, c: a.score.remote(c, seed), params))
        except Exception as e:
            cause = getattr(e, "cause", None) or e
            raise RuntimeError(
                f"scoring CMA-ES candidates on the Ray cluster failed: {type(cause).__name__}: "
                f"{cause}"
            ) from e
        return [f for f, _ in out], sum(s for _, s in out)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)


class CmaRandomStream:
    """The ``cma`` package draws candidates from numpy's global generator; this keeps that
    stream to CMA-ES alone, so nothing else drawing from it (an env, an evaluation) changes the
    candidates, and its state can be saved (as JSON) and restored."""

    def __init__(self, seed: int):
        saved = np.random.get_state()
        np.random.seed(seed)
        self.state: Any = np.random.get_state()
        np.random.set_state(saved)

    @contextmanager
    def active(self) -> Iterator[None]:
        saved = np.random.get_state()
        np.random.set_state(self.state)
        try:
            yield
        finally:
            self.state = np.random.get_state()
            np.random.set_state(saved)


def _new_strategy(n_params: int, es_cfg: CMAESConfig, seed: int) -> tuple[Any, CmaRandomStream]:
    import cma

    stream = CmaRandomStream(seed + 1)
    with stream.active():
        es = cma.CMAEvolutionStrategy(
            np.zeros(n_params),
            es_cfg.sigma0,
            {"popsize": es_cfg.popsize, "seed": seed + 1, "verbose": -9},
        )
    return es, stream


def _tell(es: Any, stream: CmaRandomStream, fitness_of: Any) -> list[float]:
    """One generation: ask (from the private stream), score, tell; return the fitnesses."""
    with stream.active():
        candidates = es.ask()
    fitness = [float(f) for f in fitness_of(candidates)]
    with stream.active():
        es.tell(candidates, [-f for f in fitness])  # cma minimises
    return fitness


def _play_real(
    spec: dict[str, Any], episodes: int, seed: int, max_envs: int, candidates: list[np.ndarray]
) -> np.ndarray:
    """The returns ``(C, episodes)`` of ``candidates`` in the real env of ``spec``, episode
    ``e`` seeded ``seed + e`` (an evaluation's seeds), played batched."""
    scorer = BatchedScorer(spec | {"rollouts": episodes}, len(candidates), max_envs)
    try:
        return scorer.returns(candidates, seed)
    finally:
        scorer.close()


def evaluated_path(bundle: Path, steps: int) -> Path:
    """Where the mean candidate evaluated at ``steps`` is kept."""
    return bundle / EVALUATED_DIR / f"{steps:012d}.safetensors"


def save_es_checkpoint(bundle: Path, state: dict[str, Any]) -> None:
    """Write the run's state (counters, every generation's fitnesses, eval rows) as JSON."""
    with atomic_dir(bundle / CHECKPOINT_DIR / "last") as tmp:
        write_json(tmp / STATE_FILE, state)


def load_es_checkpoint(bundle: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((bundle / CHECKPOINT_DIR / "last" / STATE_FILE).read_text())
    return state


Scorer = CandidateScorer | RayCandidateScorer | BatchedScorer


def make_scorer(spec: dict[str, Any], es_cfg: CMAESConfig) -> Scorer:
    """The batched scorer (``es_cfg.batched``, in the real env or the dream), Ray actors when
    ``es_cfg.cluster`` names a Ray cluster, else local worker processes."""
    from envs.cluster import uses_ray

    if es_cfg.batched:
        return BatchedScorer(spec, es_cfg.popsize, es_cfg.batch_envs)
    if uses_ray(es_cfg.cluster):
        return RayCandidateScorer(spec, es_cfg.workers, es_cfg.cluster)
    return CandidateScorer(spec, es_cfg.workers)


def _require_cma() -> None:
    try:
        import cma  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "the CMA-ES controller needs the cma package: pip install 'worldvae[cma]'"
        ) from e


@dataclass
class _Progress:
    """Where a CMA-ES run stands: what its checkpoint saves (the eval seconds excepted)."""

    history: list[list[float]] = field(default_factory=list)  # every generation's fitnesses
    rows: list[dict[str, float]] = field(default_factory=list)  # the evaluations
    steps: int = 0
    next_eval: int = 0
    next_checkpoint: int = 0
    seconds_before: float = 0.0  # training seconds of the runs before this one


def _resume(out: Path, es: Any, stream: CmaRandomStream, checkpoint_every: int) -> _Progress:
    """Replay the checkpoint's generations into the fresh ``es`` (asked from the same random
    stream, told the saved fitnesses, no env step taken); return where the run stood."""
    saved = load_es_checkpoint(out)
    for fitness in saved["fitness"]:
        _tell(es, stream, lambda _c, f=fitness: f)
    steps = int(saved["counters"]["num_timesteps"])
    progress = _Progress(
        history=[list(f) for f in saved["fitness"]],
        rows=list(saved["rows"]),
        steps=steps,
        next_eval=int(saved["next_eval"]),
        next_checkpoint=steps + checkpoint_every,
        seconds_before=float(saved["train_seconds"]),
    )
    logger.info("%s: resuming CMA-ES at generation %d, step %d", out, len(progress.history), steps)
    return progress


class _ControllerRun:
    """One CMA-ES run's generations, evaluations, checkpoints, TensorBoard scalars and
    progress bar."""

    def __init__(
        self,
        es: Any,
        stream: CmaRandomStream,
        probe: Controller,
        progress: _Progress,
        scorer: Scorer,
        out: Path,
        seed: int,
        evaluate: Any,
        eval_every_steps: int,
        checkpoint_every_steps: int,
        total_timesteps: int,
        show_progress: bool,
        max_seconds: float | None = None,
    ):
        from torch.utils.tensorboard import SummaryWriter

        self.es, self.stream, self.probe, self.p = es, stream, probe, progress
        self.scorer, self.out, self.seed, self.evaluate = scorer, out, seed, evaluate
        self.scorer_open = True
        self.eval_every, self.checkpoint_every = eval_every_steps, checkpoint_every_steps
        self.total = total_timesteps
        self.eval_seconds = 0.0
        self.writer = SummaryWriter(str(out / "tb"))
        self.start = time.perf_counter()
        self.max_seconds = max_seconds  # the bar counts its seconds, steps beside them
        self.bar = budget_bar(
            "cmaes",
            seconds=max_seconds,
            steps=total_timesteps,
            progress=show_progress,
            initial=progress.seconds_before if max_seconds else progress.steps,
        )
        self.postfix: dict[str, str] = {}

    def train_seconds(self) -> float:
        return self.p.seconds_before + time.perf_counter() - self.start - self.eval_seconds

    def log_eval(self) -> None:
        """Score the current mean candidate in the real env; append its row to ``eval.csv``;
        keep it as the best controller when it beats every earlier row.

        The candidate is kept in ``evaluated/STEP.safetensors`` (what :meth:`shortlist` chooses
        among). Its files are written before its row, so a run killed between the two
        re-evaluates the same candidate on resume (same tracks, same actions) and writes the
        same files."""
        p = self.p
        t = time.perf_counter()
        self.probe.set_params(self.es.result.xfavorite)
        mean, std = self.evaluate(self.probe)
        self.probe.save(evaluated_path(self.out, p.steps))
        if not p.rows or mean > max(r["mean_return"] for r in p.rows):
            self.probe.save(self.out / BEST_CONTROLLER_FILE)
        self.eval_seconds += time.perf_counter() - t
        p.rows.append(
            {
                "steps": p.steps,
                "seconds": round(self.train_seconds(), 3),
                "wall_seconds": round(self.train_seconds() + self.eval_seconds, 3),
                "mean_return": mean,
                "std_return": std,
            }
        )
        with atomic_open(self.out / "eval.csv") as f:
            w = csv.DictWriter(f, fieldnames=list(p.rows[-1]))
            w.writeheader()
            w.writerows(p.rows)
        self.writer.add_scalar("eval/mean_return", mean, p.steps)
        self.postfix["eval_return"] = f"{mean:.1f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        p.next_eval = p.steps + self.eval_every

    def checkpoint(self) -> None:
        p = self.p
        state = {
            "counters": {"num_timesteps": p.steps},
            "fitness": p.history,
            "rows": p.rows,
            "next_eval": p.next_eval,
            "train_seconds": round(self.train_seconds(), 3),
        }
        save_es_checkpoint(self.out, state)
        p.next_checkpoint = p.steps + self.checkpoint_every

    def score(self, candidates: list[np.ndarray]) -> list[float]:
        generation_seed = self.seed * 100_003 + len(self.p.history) * 1000
        fitness, used = self.scorer.score(candidates, seed=generation_seed)
        self.p.steps += used
        if self.max_seconds:
            self.postfix["steps"] = count(self.p.steps)
            self.bar.set_postfix(self.postfix, refresh=False)
            advance(self.bar, self.train_seconds())
        else:
            self.bar.update(used)
        return fitness

    def generation(self) -> int:
        """One generation, then the evaluation and checkpoint due; return its env steps."""
        p = self.p
        before = p.steps
        fitness = _tell(self.es, self.stream, self.score)
        p.history.append(fitness)
        self.writer.add_scalar("cmaes/best_fitness", max(fitness), p.steps)
        self.writer.add_scalar("cmaes/mean_fitness", float(np.mean(fitness)), p.steps)
        self.writer.add_scalar("cmaes/sigma", float(self.es.sigma), p.steps)
        if p.steps >= p.next_eval:
            self.log_eval()
        if self.checkpoint_every and p.steps >= p.next_checkpoint and p.steps < self.total:
            self.checkpoint()
        return p.steps - before

    def close_scorer(self) -> None:
        if self.scorer_open:
            self.scorer_open = False
            self.scorer.close()

    def close(self) -> None:
        self.close_scorer()
        self.writer.close()
        self.bar.close()

    def _shortlisted(self, size: int) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """The ``size`` best evaluation rows that kept their candidate, best first (stable
        among equals), and those candidates. The best row of a run that evaluated it before
        candidates were kept takes its candidate from the best controller file, which holds
        it until a shortlist has run."""
        best = max(self.p.rows, key=lambda r: r["mean_return"])  # the first of equals
        rows, candidates = [], []
        for row in sorted(self.p.rows, key=lambda r: -r["mean_return"]):
            path = evaluated_path(self.out, int(row["steps"]))
            if not path.is_file() and row is best:
                path = self.out / BEST_CONTROLLER_FILE
            if not path.is_file():  # evaluated before candidates were kept
                continue
            self.probe.set_tensors(load_file(str(path)))
            rows.append(row)
            candidates.append(self.probe.params())
            if len(rows) == size:
                break
        return rows, candidates

    def shortlist(
        self, size: int, choose: Callable[[list[np.ndarray]], np.ndarray]
    ) -> dict[str, Any] | None:
        """Re-score the mean candidates of the ``size`` best evaluations with ``choose``
        (candidates -> their returns ``(C, episodes)`` on other held-out tracks) and keep the
        best of them by mean return there (of equals, the better evaluated) as the best
        controller; ``choice.csv`` lists them. Return the chosen row: its ``steps``,
        evaluation ``mean_return`` and ``choice_mean_return`` / ``choice_std_return``; or None
        (the best evaluation's candidate kept) when no evaluation kept its candidate.

        Its time counts as evaluation, not training. Nothing it writes is read back: a run
        killed during it resumes from its last checkpoint and chooses again."""
        t = time.perf_counter()
        rows, candidates = self._shortlisted(size)
        if not rows:
            logger.warning(
                "%s: no evaluation kept its candidate (%s/): the best evaluation's is kept, "
                "without a shortlist",
                self.out,
                EVALUATED_DIR,
            )
            return None
        self.close_scorer()  # its workers, actors or dream envs are done
        returns = choose(candidates)
        scored = [
            row | {"choice_mean_return": float(r.mean()), "choice_std_return": float(r.std())}
            for row, r in zip(rows, returns, strict=True)
        ]
        at = max(range(len(scored)), key=lambda i: scored[i]["choice_mean_return"])
        chosen = scored[at]
        self.probe.set_params(candidates[at])
        self.probe.save(self.out / BEST_CONTROLLER_FILE)
        fields = ["steps", "mean_return", "std_return", "choice_mean_return"]
        fields += ["choice_std_return", "chosen"]
        with atomic_open(self.out / CHOICE_CSV) as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(r | {"chosen": i == at} for i, r in enumerate(scored))
        self.writer.add_scalar(
            "eval/choice_mean_return", chosen["choice_mean_return"], self.p.steps
        )
        seconds = time.perf_counter() - t
        self.eval_seconds += seconds  # an evaluation's time: not training's
        logger.info("%s: shortlist of %d played in %.0f s", self.out, len(rows), seconds)
        return chosen

    def result(self, es_cfg: CMAESConfig, chosen: dict[str, Any] | None = None) -> dict[str, Any]:
        """The bundle's record: with ``chosen`` (a :meth:`shortlist` row) its best is that
        row, and ``choice`` holds its score on the choosing tracks."""
        seconds = self.train_seconds()
        best = chosen or max(self.p.rows, key=lambda r: r["mean_return"])  # the first of equals
        extra: dict[str, Any] = {}
        if chosen is not None:
            extra["choice"] = {
                "shortlist": es_cfg.shortlist,
                "episodes": es_cfg.shortlist_episodes,
                "mean_return": chosen["choice_mean_return"],
                "std_return": chosen["choice_std_return"],
            }
        return extra | {
            "final_mean_return": self.p.rows[-1]["mean_return"],
            "best_mean_return": best["mean_return"],
            "best_step": best["steps"],
            "train_seconds": round(seconds, 3),
            "steps_per_second": round(self.p.steps / max(seconds, 1e-9), 2),
            "steps": self.p.steps,
            "generations": len(self.p.history),
            "cmaes": asdict(es_cfg),
        }


def _shortlist(
    run: _ControllerRun, spec: dict[str, Any], es_cfg: CMAESConfig, choice_seed: int
) -> dict[str, Any] | None:
    """The run's shortlist, played in the real env of ``spec`` from ``choice_seed``."""
    real = {k: v for k, v in spec.items() if k != "action_space"} | {"dream": False}
    play = partial(_play_real, real, es_cfg.shortlist_episodes, choice_seed, es_cfg.batch_envs)
    return run.shortlist(es_cfg.shortlist, play)


def train_controller(
    spec: dict[str, Any],
    es_cfg: CMAESConfig,
    total_timesteps: int,
    seed: int,
    out: Path,
    evaluate: Any,
    eval_every_steps: int,
    progress: bool = True,
    checkpoint_every_steps: int = 0,
    resume: bool = False,
    on_steps: Callable[[int], None] | None = None,
    max_seconds: float | None = None,
    choice_seed: int | None = None,
) -> dict[str, Any]:
    """Run CMA-ES until ``total_timesteps`` env steps (dream or real) have been spent, or
    ``max_seconds`` of training (evaluation excluded, earlier invocations of a resumed run
    included) have passed at the end of a generation.

    ``evaluate(controller) -> (mean, std) return`` scores the current mean candidate in the
    real env every ``eval_every_steps`` steps; rows go to ``eval.csv`` as for SB3 agents. Every
    ``checkpoint_every_steps`` (0: never) the run's state is saved; with ``resume`` the saved
    generations are replayed into a fresh strategy (asked from the same random stream and told
    the saved fitnesses, no env step taken), which restores it exactly without pickling it, and
    the run goes on from there to the same result as an uninterrupted one. ``on_steps(n)`` is
    called after each generation with the env steps it took. ``spec["make_env"]`` builds the
    env candidates are scored in (see :func:`build_scoring_env`). With ``es_cfg.shortlist``
    the shortlist is played in the real env (even for a dream-trained C) on
    ``es_cfg.shortlist_episodes`` tracks seeded from ``choice_seed``, all of its episodes
    together on a batched VecEnv of at most ``es_cfg.batch_envs`` envs (see
    :meth:`_ControllerRun.shortlist`).
    """
    _require_cma()
    if es_cfg.shortlist and choice_seed is None:
        raise ValueError("cmaes shortlist needs the seed of its tracks (choice_seed)")
    spec = spec | {"hidden": es_cfg.hidden}
    probe = spec_controller(spec, spec["action_space"])
    es, stream = _new_strategy(probe.n_params, es_cfg, seed)
    if resume:
        state = _resume(out, es, stream, checkpoint_every_steps)
    else:
        state = _Progress(next_checkpoint=checkpoint_every_steps)
    scorer = make_scorer({k: v for k, v in spec.items() if k != "action_space"}, es_cfg)
    run = _ControllerRun(
        es,
        stream,
        probe,
        state,
        scorer,
        out,
        seed,
        evaluate,
        eval_every_steps,
        checkpoint_every_steps,
        total_timesteps,
        progress,
        max_seconds,
    )
    try:
        if not state.rows:
            run.log_eval()
        while state.steps < total_timesteps:
            if max_seconds and run.train_seconds() >= max_seconds:
                logger.info("%s: time budget of %.0f s reached: CMA-ES ends", out, max_seconds)
                break
            taken = run.generation()
            if on_steps is not None:
                on_steps(taken)
        if state.rows[-1]["steps"] != state.steps:
            run.log_eval()
        chosen = None
        if es_cfg.shortlist and choice_seed is not None:
            chosen = _shortlist(run, spec, es_cfg, choice_seed)
    finally:
        run.close()
    probe.set_params(es.result.xfavorite)
    probe.save(out / CONTROLLER_FILE)
    return run.result(es_cfg, chosen)
