"""World Models' controller C: a linear map from ``[z, h]`` to actions, trained by CMA-ES.

Ha and Schmidhuber (2018) train C with CMA-ES on the cumulative reward, each candidate scored
over several rollouts, the population evaluated in parallel. Here the rollouts run in the real
env (through the ``latent+h`` wrapper) or in M's dream (:class:`~envs.dream_env.DreamEnv`); either
way the periodic evaluation, like every agent's, is in the real env on fixed seeds. Worker
processes (or, with ``cluster: ray``, Ray actors anywhere on a cluster) each build their env
once and score the candidates handed to them; every candidate of a generation meets the same
episode seeds, so where a candidate is scored does not change its fitness.

The bundle holds ``controller.safetensors`` (``weight`` ``(A_out, obs_dim)``, ``bias``
``(A_out,)``) instead of an SB3 zip.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from safetensors.numpy import load_file, save_file
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

from agents.agent_checkpoint import CHECKPOINT_DIR
from agents.agent_checkpoint import STATE as STATE_FILE
from worldvae.atomic import atomic_dir, atomic_path, write_json
from worldvae.config_fields import reject_unknown_keys

logger = logging.getLogger(__name__)

CONTROLLER_FILE = "controller.safetensors"


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
    """

    popsize: int = 16
    rollouts: int = 4
    sigma0: float = 0.1
    workers: int = 2
    n_envs: int = 1
    cluster: str = "local"

    def __post_init__(self) -> None:
        from envs.cluster import check_cluster

        check_cluster(self.cluster)
        for name in ("popsize", "rollouts", "workers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"cmaes {name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CMAESConfig:
        reject_unknown_keys(cls, d, "cmaes hyperparameter")
        return cls(**d)


class LinearController:
    """``a = argmax(W x + b)`` for Discrete actions; ``low + (tanh(W x + b) + 1) / 2 *
    (high - low)`` for Box actions. ``x`` is the ``[z, h]`` observation ``(obs_dim,)``."""

    def __init__(self, obs_dim: int, action_space: gym.Space, params: np.ndarray | None = None):
        if isinstance(action_space, spaces.Discrete):
            self.n_out = int(action_space.n)
        elif isinstance(action_space, spaces.Box):
            self.n_out = int(np.prod(action_space.shape or ()))
        else:
            raise ValueError(
                f"the CMA-ES controller needs Discrete or Box actions, got {action_space}"
            )
        self.obs_dim, self.action_space = obs_dim, action_space
        self.weight = np.zeros((self.n_out, obs_dim), np.float32)
        self.bias = np.zeros(self.n_out, np.float32)
        if params is not None:
            self.set_params(params)

    @property
    def n_params(self) -> int:
        return self.n_out * (self.obs_dim + 1)

    def set_params(self, params: np.ndarray) -> None:
        params = np.asarray(params, np.float32)
        if params.shape != (self.n_params,):
            raise ValueError(f"expected {self.n_params} parameters, got {params.shape}")
        self.weight = params[: self.n_out * self.obs_dim].reshape(self.n_out, self.obs_dim)
        self.bias = params[self.n_out * self.obs_dim :].copy()

    def params(self) -> np.ndarray:
        return np.concatenate([self.weight.reshape(-1), self.bias])

    def predict(
        self,
        obs: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Actions for a batch of observations ``(N, obs_dim)`` (SB3's ``predict`` shape)."""
        y = np.asarray(obs, np.float32).reshape(-1, self.obs_dim) @ self.weight.T + self.bias
        if isinstance(self.action_space, spaces.Discrete):
            return y.argmax(axis=1) + int(self.action_space.start), None
        low, high = self.action_space.low.reshape(-1), self.action_space.high.reshape(-1)
        a = low + (np.tanh(y) + 1.0) / 2.0 * (high - low)
        return a.reshape(-1, *self.action_space.shape).astype(np.float32), None

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            save_file({"weight": self.weight, "bias": self.bias}, str(tmp))


def load_controller(
    bundle: str | Path, observation_space: gym.Space, action_space: gym.Space
) -> LinearController:
    """The controller of a CMA-ES bundle (safetensors; nothing is unpickled)."""
    tensors = load_file(str(Path(bundle) / CONTROLLER_FILE))
    obs_dim = int(np.prod(observation_space.shape or ()))
    c = LinearController(obs_dim, action_space)
    if tensors["weight"].shape != c.weight.shape:
        raise ValueError(
            f"{bundle}: controller weight {tensors['weight'].shape} does not fit observations "
            f"({obs_dim},) and {action_space}"
        )
    c.weight, c.bias = tensors["weight"], tensors["bias"]
    return c


def rollouts(controller: LinearController, venv: VecEnv, n: int, seed: int) -> tuple[float, int]:
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
    """The one-env VecEnv candidates are scored in: the dream or the real ``latent+h`` env."""
    from agents.agent_config import AgentConfig
    from agents.environments import build_vec_env
    from worldvae.memory import load_memory
    from worldvae.vae import load_model

    cfg = AgentConfig.from_dict(spec["cfg"])
    bundle = Path(spec["bundle"])
    memory, extra = load_memory(bundle / "memory", device="cpu")
    if spec["dream"]:
        from agents.environments import build_dream_vec_env

        return build_dream_vec_env(cfg, 1, cfg.seed, memory, extra["latent_data"])
    model = load_model(bundle / "model", device="cpu")
    return build_vec_env(cfg, 1, cfg.seed, model, memory=memory)


def _worker(spec: dict[str, Any], jobs: Any, results: Any) -> None:
    torch.set_num_threads(1)
    venv = build_scoring_env(spec)
    controller = LinearController(int(spec["obs_dim"]), venv.action_space)
    parent = os.getppid()
    while True:
        try:
            job = jobs.get(timeout=5.0)
        except queue.Empty:
            if os.getppid() != parent:  # the trainer died without telling us: stop too
                break
            continue
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
        if workers > 1:
            ctx = mp.get_context("spawn")
            self.jobs, self.results = ctx.Queue(), ctx.Queue()
            self.procs = [
                ctx.Process(target=_worker, args=(spec, self.jobs, self.results), daemon=True)
                for _ in range(workers)
            ]
            for p in self.procs:
                p.start()
        else:
            self.venv = build_scoring_env(spec)
            self.controller = LinearController(int(spec["obs_dim"]), self.venv.action_space)

    def score(self, candidates: list[np.ndarray], seed: int) -> tuple[list[float], int]:
        """Mean return of each candidate over the same ``rollouts`` seeds, and total steps."""
        if not self.procs:
            out = []
            for c in candidates:
                self.controller.set_params(c)
                out.append(rollouts(self.controller, self.venv, int(self.spec["rollouts"]), seed))
        else:
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
        return [f for f, _ in out], sum(s for _, s in out)

    def close(self) -> None:
        for _ in self.procs:
            self.jobs.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        if not self.procs:
            self.venv.close()


class _ScoringActor:
    """One Ray actor's scoring env and controller (built once, like a worker process's)."""

    def __init__(self, spec: dict[str, Any]):
        torch.set_num_threads(1)
        self.spec = spec
        self.venv = build_scoring_env(spec)
        self.controller = LinearController(int(spec["obs_dim"]), self.venv.action_space)

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


def save_es_checkpoint(bundle: Path, state: dict[str, Any]) -> None:
    """Write the run's state (counters, every generation's fitnesses, eval rows) as JSON."""
    with atomic_dir(bundle / CHECKPOINT_DIR / "last") as tmp:
        write_json(tmp / STATE_FILE, state)


def load_es_checkpoint(bundle: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((bundle / CHECKPOINT_DIR / "last" / STATE_FILE).read_text())
    return state


def make_scorer(spec: dict[str, Any], es_cfg: CMAESConfig) -> CandidateScorer | RayCandidateScorer:
    """Local worker processes, or Ray actors when ``es_cfg.cluster`` names a Ray cluster."""
    from envs.cluster import uses_ray

    if uses_ray(es_cfg.cluster):
        return RayCandidateScorer(spec, es_cfg.workers, es_cfg.cluster)
    return CandidateScorer(spec, es_cfg.workers)


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
) -> dict[str, Any]:
    """Run CMA-ES until ``total_timesteps`` env steps (dream or real) have been spent.

    ``evaluate(controller) -> mean return`` scores the current mean candidate in the real env
    every ``eval_every_steps`` steps; rows go to ``eval.csv`` as for SB3 agents. Every
    ``checkpoint_every_steps`` (0: never) the run's state is saved; with ``resume`` the saved
    generations are replayed into a fresh strategy (asked from the same random stream and told
    the saved fitnesses, no env step taken), which restores it exactly without pickling it, and
    the run goes on from there to the same result as an uninterrupted one. ``on_steps(n)`` is
    called after each generation with the env steps it took.
    """
    import csv

    try:
        import cma  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "the CMA-ES controller needs the cma package: pip install 'worldvae[cma]'"
        ) from e
    from torch.utils.tensorboard import SummaryWriter

    from worldvae.atomic import atomic_open

    obs_dim = int(spec["obs_dim"])
    probe = LinearController(obs_dim, spec["action_space"])
    es, stream = _new_strategy(probe.n_params, es_cfg, seed)
    history: list[list[float]] = []
    rows: list[dict[str, float]] = []
    steps, next_eval, next_checkpoint = 0, 0, checkpoint_every_steps
    eval_seconds, seconds_before = 0.0, 0.0
    if resume:
        saved = load_es_checkpoint(out)
        for fitness in saved["fitness"]:
            _tell(es, stream, lambda _c, f=fitness: f)
        history = [list(f) for f in saved["fitness"]]
        rows = list(saved["rows"])
        steps, next_eval = int(saved["counters"]["num_timesteps"]), int(saved["next_eval"])
        next_checkpoint = steps + checkpoint_every_steps
        seconds_before = float(saved["train_seconds"])
        logger.info("%s: resuming CMA-ES at generation %d, step %d", out, len(history), steps)
    scorer = make_scorer({k: v for k, v in spec.items() if k != "action_space"}, es_cfg)
    writer = SummaryWriter(str(out / "tb"))
    start = time.perf_counter()
    bar = tqdm(
        total=total_timesteps,
        initial=steps,
        unit="step",
        desc="cmaes",
        disable=not progress,
        dynamic_ncols=True,
    )

    def train_seconds() -> float:
        return seconds_before + time.perf_counter() - start - eval_seconds

    def log_eval() -> None:
        nonlocal eval_seconds, next_eval
        t = time.perf_counter()
        probe.set_params(es.result.xfavorite)
        mean, std = evaluate(probe)
        eval_seconds += time.perf_counter() - t
        rows.append(
            {
                "steps": steps,
                "seconds": round(train_seconds(), 3),
                "wall_seconds": round(train_seconds() + eval_seconds, 3),
                "mean_return": mean,
                "std_return": std,
            }
        )
        with atomic_open(out / "eval.csv") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[-1]))
            w.writeheader()
            w.writerows(rows)
        writer.add_scalar("eval/mean_return", mean, steps)
        bar.set_postfix(eval_return=f"{mean:.1f}", refresh=False)
        next_eval = steps + eval_every_steps

    def checkpoint() -> None:
        nonlocal next_checkpoint
        state = {
            "counters": {"num_timesteps": steps},
            "fitness": history,
            "rows": rows,
            "next_eval": next_eval,
            "train_seconds": round(train_seconds(), 3),
        }
        save_es_checkpoint(out, state)
        next_checkpoint = steps + checkpoint_every_steps

    def score(candidates: list[np.ndarray]) -> list[float]:
        nonlocal steps
        generation_seed = seed * 100_003 + len(history) * 1000
        fitness, used = scorer.score(candidates, seed=generation_seed)
        steps += used
        bar.update(used)
        return fitness

    try:
        if not rows:
            log_eval()
        while steps < total_timesteps:
            before = steps
            fitness = _tell(es, stream, score)
            history.append(fitness)
            writer.add_scalar("cmaes/best_fitness", max(fitness), steps)
            writer.add_scalar("cmaes/mean_fitness", float(np.mean(fitness)), steps)
            writer.add_scalar("cmaes/sigma", float(es.sigma), steps)
            if steps >= next_eval:
                log_eval()
            if checkpoint_every_steps and steps >= next_checkpoint and steps < total_timesteps:
                checkpoint()
            if on_steps is not None:
                on_steps(steps - before)
        if rows[-1]["steps"] != steps:
            log_eval()
    finally:
        scorer.close()
        writer.close()
        bar.close()
    probe.set_params(es.result.xfavorite)
    probe.save(out / CONTROLLER_FILE)
    seconds = train_seconds()
    return {
        "final_mean_return": rows[-1]["mean_return"],
        "train_seconds": round(seconds, 3),
        "steps_per_second": round(steps / max(seconds, 1e-9), 2),
        "steps": steps,
        "generations": len(history),
        "cmaes": asdict(es_cfg),
    }
