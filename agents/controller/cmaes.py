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
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

from agents.agent_checkpoint import CHECKPOINT_DIR
from agents.agent_checkpoint import STATE as STATE_FILE
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
    """The controller of a CMA-ES bundle (safetensors; nothing is unpickled).

    Raises:
        ValueError: the file is unreadable, its shapes do not fit the spaces, or it holds NaN
            or infinity (the file named).
    """
    path = Path(bundle) / CONTROLLER_FILE
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable controller file ({e}); re-train it") from e
    obs_dim = int(np.prod(observation_space.shape or ()))
    c = LinearController(obs_dim, action_space)
    shapes = {k: tensors[k].shape if k in tensors else None for k in ("weight", "bias")}
    if shapes != {"weight": c.weight.shape, "bias": c.bias.shape}:
        raise ValueError(
            f"{path}: controller weight {shapes['weight']} and bias {shapes['bias']} do not fit "
            f"observations ({obs_dim},) and {action_space}"
        )
    if not all(np.isfinite(tensors[k]).all() for k in ("weight", "bias")):
        raise ValueError(
            f"{path} holds non-finite weights (NaN or infinity); the controller is damaged: "
            "re-train it"
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
    """The one-env VecEnv candidates are scored in (the dream or the real ``latent+h`` env),
    built by the spec's ``make_env`` (see :class:`agents.algorithms.TrainRun`)."""
    venv: VecEnv = spec["make_env"](spec)
    return venv


def _worker(spec: dict[str, Any], jobs: Any, results: Any, parent_pid: int) -> None:
    exit_with_parent(parent_pid)  # the trainer killed (OOM, kill -9) takes its workers along
    torch.set_num_threads(1)
    venv = build_scoring_env(spec)
    controller = LinearController(int(spec["obs_dim"]), venv.action_space)
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
            self.controller = LinearController(int(spec["obs_dim"]), self.venv.action_space)

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
        probe: LinearController,
        progress: _Progress,
        scorer: CandidateScorer | RayCandidateScorer,
        out: Path,
        seed: int,
        evaluate: Any,
        eval_every_steps: int,
        checkpoint_every_steps: int,
        total_timesteps: int,
        show_progress: bool,
    ):
        from torch.utils.tensorboard import SummaryWriter

        self.es, self.stream, self.probe, self.p = es, stream, probe, progress
        self.scorer, self.out, self.seed, self.evaluate = scorer, out, seed, evaluate
        self.eval_every, self.checkpoint_every = eval_every_steps, checkpoint_every_steps
        self.total = total_timesteps
        self.eval_seconds = 0.0
        self.writer = SummaryWriter(str(out / "tb"))
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=total_timesteps,
            initial=progress.steps,
            unit="step",
            desc="cmaes",
            disable=not show_progress,
            dynamic_ncols=True,
        )

    def train_seconds(self) -> float:
        return self.p.seconds_before + time.perf_counter() - self.start - self.eval_seconds

    def log_eval(self) -> None:
        """Score the current mean candidate in the real env; append its row to ``eval.csv``."""
        p = self.p
        t = time.perf_counter()
        self.probe.set_params(self.es.result.xfavorite)
        mean, std = self.evaluate(self.probe)
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
        self.bar.set_postfix(eval_return=f"{mean:.1f}", refresh=False)
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

    def close(self) -> None:
        self.scorer.close()
        self.writer.close()
        self.bar.close()

    def result(self, es_cfg: CMAESConfig) -> dict[str, Any]:
        seconds = self.train_seconds()
        return {
            "final_mean_return": self.p.rows[-1]["mean_return"],
            "train_seconds": round(seconds, 3),
            "steps_per_second": round(self.p.steps / max(seconds, 1e-9), 2),
            "steps": self.p.steps,
            "generations": len(self.p.history),
            "cmaes": asdict(es_cfg),
        }


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

    ``evaluate(controller) -> (mean, std) return`` scores the current mean candidate in the
    real env every ``eval_every_steps`` steps; rows go to ``eval.csv`` as for SB3 agents. Every
    ``checkpoint_every_steps`` (0: never) the run's state is saved; with ``resume`` the saved
    generations are replayed into a fresh strategy (asked from the same random stream and told
    the saved fitnesses, no env step taken), which restores it exactly without pickling it, and
    the run goes on from there to the same result as an uninterrupted one. ``on_steps(n)`` is
    called after each generation with the env steps it took. ``spec["make_env"]`` builds the
    env candidates are scored in (see :func:`build_scoring_env`).
    """
    _require_cma()
    probe = LinearController(int(spec["obs_dim"]), spec["action_space"])
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
    )
    try:
        if not state.rows:
            run.log_eval()
        while state.steps < total_timesteps:
            taken = run.generation()
            if on_steps is not None:
                on_steps(taken)
        if state.rows[-1]["steps"] != state.steps:
            run.log_eval()
    finally:
        run.close()
    probe.set_params(es.result.xfavorite)
    probe.save(out / CONTROLLER_FILE)
    return run.result(es_cfg)
