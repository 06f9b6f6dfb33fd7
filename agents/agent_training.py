"""Training one agent on pixels, on latents, or through a pretrained encoder: SB3's learn loop,
or the train hook of an algorithm that brings its own (see :mod:`agents.algorithms`)."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from agents.agent_checkpoint import (
    CHECKPOINT_DIR,
    boundary_seed,
    checkpoint_step,
    load_checkpoint,
    save_checkpoint,
)
from agents.agent_config import AgentConfig
from agents.algo_kwargs import SHORTLIST_KEYS, constructor_kwargs
from agents.algorithms import TrainRun, get_algorithm
from agents.arms import get_arm
from agents.bundle import (
    AGENT_FILE,
    BEST_AGENT_FILE,
    CONFIG_FILE,
    CONTROLLER_FILE,
    DREAM_ENSEMBLE_DIR,
    EVAL_CSV,
    MEMORY_DIR,
    MODEL_DIR,
    copy_memory,
    copy_model,
    policy_kwargs,
    policy_name,
)
from agents.controller.cmaes import BEST_CONTROLLER_FILE, CHOICE_CSV, EVALUATED_DIR
from agents.environments import build_dream_vec_env, build_vec_env, evaluate_policy_seeded
from agents.policy_shortlist import (
    evaluated_policy_path,
    restore_best_policy,
    run_shortlist,
    shortlist_size,
)
from agents.preflight import check_agent_run
from agents.progress import advance, budget_bar, count
from envs.backends import warn_on_backend_mismatch
from envs.latent import VecLatentObservation
from envs.latent_memory import VecLatentMemoryObservation
from worldvae.atomic import atomic_path, write_json
from worldvae.encoders import load_encoder
from worldvae.envspec import read_env_spec
from worldvae.memory import load_memory
from worldvae.records import record_path, recorded_path
from worldvae.rundir import ForeignDirError, RunDirLock, check_ours, remove_owned
from worldvae.vae import load_model
from worldvae.versions import library_versions

logger = logging.getLogger(__name__)

# Everything an agent bundle holds; ``overwrite`` removes these and nothing else.
AGENT_ENTRIES = (
    CONFIG_FILE,
    AGENT_FILE,
    BEST_AGENT_FILE,
    MODEL_DIR,
    MEMORY_DIR,
    DREAM_ENSEMBLE_DIR,
    CONTROLLER_FILE,
    BEST_CONTROLLER_FILE,
    EVAL_CSV,
    EVALUATED_DIR,
    CHOICE_CSV,
    "tb",
    CHECKPOINT_DIR,
)


def save_agent(agent: Any, path: Path) -> None:
    """Write ``agent``'s SB3 zip to ``path`` atomically."""
    with atomic_path(path) as tmp:
        agent.save(str(tmp))
        if not tmp.exists():  # SB3 appends .zip when the name lacks it
            Path(f"{tmp}.zip").replace(tmp)


def best_row(rows: list[dict[str, float]]) -> dict[str, float] | None:
    """The evaluation with the highest mean return (the earliest of equals)."""
    return max(rows, key=lambda r: r["mean_return"]) if rows else None


class EvalListener(BaseCallback):
    """A callback told of each evaluation of a run: pass it in ``train_agent(callbacks=...)``.

    :meth:`on_evaluation` receives each ``eval.csv`` row as it is written. Setting ``stop``
    (there, or at any step) stops training at the next env step, and no final evaluation is
    added: the run's last row is its last evaluation. :mod:`agents.tuning` prunes its trials
    and ends them on its wall-clock budget through it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stop = False

    def on_evaluation(self, row: dict[str, float]) -> None:
        """Called with each evaluation's row (the keys of ``eval.csv``)."""

    def _on_step(self) -> bool:
        return not self.stop


class EvalAndProgress(BaseCallback):
    """Evaluates every ``eval_freq`` env steps on fixed seeds; shows a progress bar in the
    budget's unit: training seconds of ``max_train_seconds`` (evaluation excluded, as the
    budget counts them; the env steps beside them), else env steps.

    Evaluations happen between a rollout and the next (at the first rollout start at least
    ``eval_freq`` steps after the last one) and when training ends, so each evaluates the
    policy as updated on all the steps its row counts.

    Each evaluation appends a row to ``eval.csv`` (steps, training seconds excluding
    evaluation, wall seconds, mean and std return) and logs ``eval/mean_return``. When
    ``best_path`` is given, the policy of the best evaluation so far is kept there; with
    ``keep_in`` (the bundle), every evaluation's policy is kept for a shortlist
    (:func:`agents.policy_shortlist.evaluated_policy_path`). Each row
    is handed to the ``listeners``; one that sets its ``stop`` ends training.
    """

    def __init__(
        self,
        eval_env: Any,
        cfg: AgentConfig,
        csv_path: Path,
        progress: bool,
        on_steps: Callable[[int], None] | None = None,
        best_path: Path | None = None,
        listeners: Sequence[EvalListener] = (),
        keep_in: Path | None = None,
    ):
        super().__init__()
        self.eval_env, self.cfg, self.csv_path = eval_env, cfg, csv_path
        self.best_path = best_path
        self.keep_in = keep_in
        self.listeners = list(listeners)
        self.stopped = False  # a listener stopped the run
        self.on_steps = on_steps
        self.rows: list[dict[str, float]] = []
        self.progress = progress
        self.next_eval = 0
        self.eval_seconds = 0.0
        self.wall_before = 0.0  # wall seconds of earlier runs of the same agent (resumed)
        self.postfix: dict[str, str] = {}

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to go on exactly where this one was."""
        return {
            "rows": self.rows,
            "next_eval": self.next_eval,
            "eval_seconds": self.eval_seconds,
            "wall_seconds": self.wall_before + time.perf_counter() - self.start,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])
        self.next_eval = int(state["next_eval"])
        self.eval_seconds = float(state["eval_seconds"])
        self.wall_before = float(state["wall_seconds"])
        self._write_csv()

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()
        budget = self.cfg.max_train_seconds
        self.bar = budget_bar(
            self.cfg.run_name,
            seconds=budget,
            steps=self.cfg.total_timesteps,
            progress=self.progress,
            initial=0 if budget is not None else self.num_timesteps,
        )
        if not self.rows:
            self._evaluate()

    def _write_csv(self) -> None:
        if not self.rows:
            return
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            w.writeheader()
            w.writerows(self.rows)

    def _evaluate(self) -> None:
        t = time.perf_counter()
        returns = evaluate_policy_seeded(
            self.model, self.eval_env, self.cfg.eval_episodes, self.cfg.eval_seed
        )
        self.eval_seconds += time.perf_counter() - t
        wall = self.wall_before + time.perf_counter() - self.start
        row = {
            "steps": int(self.num_timesteps),
            "seconds": round(wall - self.eval_seconds, 3),
            "wall_seconds": round(wall, 3),
            "mean_return": float(returns.mean()),
            "std_return": float(returns.std()),
        }
        best = best_row(self.rows)
        self.rows.append(row)
        self._write_csv()
        saving = time.perf_counter()
        if self.best_path is not None and (
            best is None or row["mean_return"] > best["mean_return"]
        ):
            save_agent(self.model, self.best_path)
        if self.keep_in is not None:
            kept = evaluated_policy_path(self.keep_in, int(row["steps"]))
            kept.parent.mkdir(exist_ok=True)
            save_agent(self.model, kept)
        self.eval_seconds += time.perf_counter() - saving  # an evaluation's, not training's
        self.logger.record("eval/mean_return", row["mean_return"])
        self.logger.record("charts/SPS", self.num_timesteps / max(row["seconds"], 1e-9))
        self.postfix["eval_return"] = f"{row['mean_return']:.1f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.next_eval = self.num_timesteps + self.cfg.eval_freq
        for listener in self.listeners:
            listener.on_evaluation(row)

    def _on_rollout_start(self) -> None:
        # Here, after the previous update: a row's policy is the one trained on its steps.
        if self.num_timesteps >= self.next_eval:
            self._evaluate()

    def train_seconds(self) -> float:
        """Training seconds of this process's run so far, evaluation excluded: what
        ``max_train_seconds`` counts."""
        return time.perf_counter() - self.start - self.eval_seconds

    def _on_step(self) -> bool:
        budget = self.cfg.max_train_seconds
        training = self.train_seconds()
        if budget is None:
            self.bar.update(self.training_env.num_envs)
        elif not self.bar.disable and int(training) > self.bar.n:  # once a second, with steps
            self.postfix["steps"] = count(self.num_timesteps)
            self.bar.set_postfix(self.postfix, refresh=False)
            advance(self.bar, training)
        if self.on_steps is not None:
            self.on_steps(self.training_env.num_envs)
        if any(listener.stop for listener in self.listeners):
            self.stopped = True
            return False
        return budget is None or training < budget  # False stops learn() at once

    def _on_training_end(self) -> None:
        self.stopped = self.stopped or any(listener.stop for listener in self.listeners)
        if not self.stopped and (not self.rows or self.rows[-1]["steps"] != self.num_timesteps):
            self._evaluate()
        self.bar.close()


class CheckpointAndReset(BaseCallback):
    """Every ``checkpoint_freq`` env steps, at the start of a rollout: checkpoint, then start
    fresh episodes from seeds derived from the boundary (see :mod:`agents.agent_checkpoint`).

    The reset happens whether or not the run is later interrupted, so a resumed run (which
    must reset its envs) follows the same path as an uninterrupted one.
    """

    def __init__(self, cfg: AgentConfig, bundle: Path, evaluator: EvalAndProgress):
        super().__init__()
        self.cfg, self.bundle, self.evaluator = cfg, bundle, evaluator
        self.boundary = 0
        self.next_checkpoint = cfg.checkpoint_freq

    def state(self) -> dict[str, Any]:
        return {
            "boundary": self.boundary,
            "next_checkpoint": self.next_checkpoint,
            "eval": self.evaluator.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.boundary = int(state["boundary"])
        self.next_checkpoint = int(state["next_checkpoint"])
        self.evaluator.restore(state["eval"])

    def _on_rollout_start(self) -> None:
        freq = self.cfg.checkpoint_freq
        if not freq or self.num_timesteps < self.next_checkpoint:
            return
        self.boundary += 1
        self.next_checkpoint = (self.num_timesteps // freq + 1) * freq
        save_checkpoint(self.model, self.bundle, self.state())
        agent: Any = self.model
        env = agent.get_env()
        env.seed(boundary_seed(self.cfg.seed, self.boundary))
        agent._last_obs = env.reset()
        agent._last_episode_starts = np.ones((env.num_envs,), dtype=bool)

    def _on_step(self) -> bool:
        return True


@dataclass
class AgentResult:
    path: Path
    final_mean_return: float
    train_seconds: float
    steps_per_second: float
    skipped: bool = False


def _read_info(bundle: Path) -> dict[str, Any] | None:
    """The bundle's ``config.json`` if it is an agent's, else None."""
    try:
        info = json.loads((bundle / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) and "agent" in info else None


class OtherSettingsError(ValueError):
    """The agent folder holds an unfinished run of other settings (nothing was changed)."""


# CMA-ES settings that choose where candidates are scored, or how the best is chosen once
# training ends, not what is trained: a run resumes across them (agents.controller.cmaes)
CMAES_SCORING = ("workers", "cluster", "batched", "batch_envs", "shortlist", "shortlist_episodes")


def _same_run(recorded: dict[str, Any], cfg: AgentConfig, out: Path) -> bool:
    """Settings that must agree to resume (the device may change). The model and M folders
    of an older record, relative, are read from the bundle ``out`` first (worldvae.records)."""
    now = json.loads(json.dumps(cfg.to_dict()))
    old = dict(recorded)
    # a setting added since the record was written takes its default; a record this version
    # cannot read is compared as it is
    with contextlib.suppress(ValueError, TypeError):
        old = json.loads(json.dumps(AgentConfig.from_dict(recorded).to_dict()))
    for key in ("model_dir", "memory_dir"):
        if isinstance(old.get(key), str):
            old[key] = record_path(recorded_path(old[key], out, key) or old[key])
    # where CMA-ES scores its candidates, and a shortlist after training, change nothing
    # that is trained
    ignored = CMAES_SCORING if now.get("algo") == "cmaes" else SHORTLIST_KEYS
    for d in (old, now):
        kwargs = d.get("algo_kwargs")
        if isinstance(kwargs, dict):
            d["algo_kwargs"] = {k: v for k, v in kwargs.items() if k not in ignored}
    return {k: v for k, v in old.items() if k != "device"} == {
        k: v for k, v in now.items() if k != "device"
    }


def _claim_bundle(out: Path, cfg: AgentConfig, overwrite: bool) -> dict[str, Any] | None:
    """Make ``out`` ready for ``cfg``, under its lock; return the info of a run to resume.

    Removes only what an agent bundle holds, and only when asked (``overwrite``) or when it
    is an unfinished run of the same settings that left no checkpoint.
    """
    if (out / CONFIG_FILE).exists() and _read_info(out) is None:
        raise ForeignDirError(
            f"{out} holds a {CONFIG_FILE} that is not an agent's; nothing was changed: choose "
            "an empty or new --out"
        )
    check_ours(out, AGENT_ENTRIES, "train-agent agent")
    info = _read_info(out)
    if info is None:
        remove_owned(out, AGENT_ENTRIES)  # debris of a run killed before its config was written
        return None
    if info.get("status") == "complete" or overwrite:
        if not overwrite:
            raise FileExistsError(
                f"agent directory {out} already holds a trained agent; pass --overwrite to "
                "replace it or choose another --out"
            )
        remove_owned(out, AGENT_ENTRIES)
        return None
    if not _same_run(info["agent"], cfg, out):
        raise OtherSettingsError(
            f"{out} holds an unfinished agent run with other settings; re-run with the same "
            "settings to resume it, pass --overwrite to replace it, or choose another --out"
        )
    if checkpoint_step(out) is None:
        logger.warning("%s: the unfinished run left no checkpoint; starting from step 0", out)
        remove_owned(out, AGENT_ENTRIES)
        return None
    return info


def train_agent(
    cfg: AgentConfig,
    out_dir: str | Path,
    overwrite: bool = False,
    skip_complete: bool = False,
    progress: bool = True,
    subprocess_envs: bool = False,
    on_steps: Callable[[int], None] | None = None,
    callbacks: list[BaseCallback] | None = None,
) -> AgentResult:
    """Train ``cfg`` into the bundle ``out_dir``.

    A complete bundle is refused unless ``overwrite`` (replace) or ``skip_complete`` (return
    it as is, for resumable comparisons). An unfinished bundle of the same settings (a killed
    run) continues from its last checkpoint. A folder holding anything an agent bundle does
    not is refused, ``overwrite`` or not. ``callbacks`` (SB3 callbacks) run beside ours; an
    :class:`EvalListener` among them is also told of each evaluation and may stop the run;
    ``on_steps(n)`` is called after every vectorised step with the env steps it took.

    Settings the run cannot train with are refused before anything is written
    (:func:`agents.preflight.check_agent_run`); a new run that fails before its first env step
    removes what it wrote, so the corrected command starts afresh.

    Raises:
        FileExistsError: a complete bundle without ``overwrite``, or a folder that is not one.
        RunDirBusyError: another process is writing ``out_dir``.
        ValueError, CheckpointError: settings, env or model the run cannot train with.
    """
    out = Path(out_dir)
    done = _read_info(out)
    if done is not None and done.get("status") == "complete" and skip_complete:
        return AgentResult(
            out,
            done["final_mean_return"],
            done["train_seconds"],
            done["steps_per_second"],
            skipped=True,
        )
    check_agent_run(cfg)
    steps = StepWatch(on_steps)
    with RunDirLock(out, "train-agent"):
        resumed = _claim_bundle(out, cfg, overwrite)
        try:
            return _train(cfg, out, resumed, progress, subprocess_envs, steps, callbacks or [])
        except BaseException:
            if resumed is None and not steps.started:  # nothing trained: leave nothing behind
                remove_owned(out, AGENT_ENTRIES)
            raise


class StepWatch:
    """``on_steps`` that also records whether training took its first env step."""

    def __init__(self, on_steps: Callable[[int], None] | None):
        self.on_steps = on_steps
        self.started = False

    def __call__(self, n: int) -> None:
        self.started = True
        if self.on_steps is not None:
            self.on_steps(n)


def _train(
    cfg: AgentConfig,
    out: Path,
    resumed: dict[str, Any] | None,
    progress: bool,
    subprocess_envs: bool,
    on_steps: Callable[[int], None] | None,
    callbacks: list[BaseCallback],
) -> AgentResult:
    """Train ``cfg`` into the claimed bundle ``out``, continuing the run ``resumed`` records."""
    import torch

    info = _bundle_info(cfg, out, resumed)
    memory, memory_info = _memory(cfg, out, info, resumed is None)
    write_json(out / CONFIG_FILE, info)
    model = load_encoder(out / "model", device=cfg.device) if get_arm(cfg.obs).loads_model else None
    torch.manual_seed(cfg.seed)
    eval_env = build_vec_env(cfg, 1, cfg.eval_seed, model, memory=memory)
    algorithm = get_algorithm(cfg.algo)
    if algorithm.train is not None:
        run = TrainRun(
            cfg,
            out,
            eval_env.observation_space,
            eval_env.action_space,
            _evaluator(cfg, eval_env),
            bundle_env,
            _latent_data(cfg, memory_info) if cfg.dream else "",
            progress,
            resumed is not None,
            on_steps,
        )
        return _finish_hooked(out, info, algorithm.train(run), eval_env)
    env = _training_env(cfg, info, model, memory, memory_info, subprocess_envs, out)
    kwargs = constructor_kwargs(cfg.algo_kwargs)
    if cfg.algo_kwargs.get("normalize_reward"):
        from stable_baselines3.common.vec_env import VecNormalize

        env = VecNormalize(env, norm_obs=False, gamma=float(kwargs.get("gamma", 0.99)))
    try:
        agent = algorithm.sb3_class()(
            policy_name(cfg),
            env,
            seed=cfg.seed,
            device=cfg.device,
            tensorboard_log=str(out / "tb"),
            policy_kwargs=policy_kwargs(cfg, out),
            verbose=0,
            **kwargs,
        )
    except AssertionError as e:  # SB3 checks its arguments with assert
        raise ValueError(
            f"{algorithm.title} refused the hyperparameters: {e}; change them (--hyperparams)"
        ) from e
    play_env = partial(build_vec_env, cfg, seed=cfg.eval_seed, model=model, memory=memory)
    return _learn(
        cfg, out, info, agent, env, eval_env, resumed, progress, on_steps, callbacks, play_env
    )


def _bundle_info(cfg: AgentConfig, out: Path, resumed: dict[str, Any] | None) -> dict[str, Any]:
    """The bundle's ``config.json`` content: ``resumed``, or a fresh run's with the model
    copied into the bundle."""
    if resumed is None:
        info: dict[str, Any] = {
            "agent": cfg.to_dict(),
            "status": "training",
            "versions": library_versions(),
        }
        if cfg.model_dir:
            info["model_sha256"] = copy_model(cfg.model_dir, out)
            info["model_source"] = record_path(cfg.model_dir)
            model_env = read_env_spec(out / "model")  # None: a model that records no env
            if model_env is not None:
                warn_on_backend_mismatch(
                    model_env.backend, cfg.env.backend, f"the model {cfg.model_dir}"
                )
    else:
        info = resumed
    return info


def _memory(
    cfg: AgentConfig, out: Path, info: dict[str, Any], fresh: bool
) -> tuple[Any, dict[str, Any]]:
    """M and its training info (``(None, {})`` without one), copied into the bundle first on
    a ``fresh`` run."""
    if not cfg.memory_dir:
        return None, {}
    if fresh:
        info["memory_sha256"] = copy_memory(cfg.memory_dir, out, info["model_sha256"])
        info["memory_source"] = record_path(cfg.memory_dir)
        info["dream_ensemble_sha256"] = [
            copy_memory(src, out, info["model_sha256"], f"{DREAM_ENSEMBLE_DIR}/{k}")
            for k, src in enumerate(cfg.dream_ensemble, start=1)
        ]
    return _bundle_memory(out, cfg.device)


def _bundle_memory(bundle: Path, device: str) -> tuple[Any, dict[str, Any]]:
    """M's copy in ``bundle`` and its record, whose ``latent_data`` (relative in an older
    record) is read from the copy's folder first, then the working folder (worldvae.records)."""
    memory, info = load_memory(bundle / MEMORY_DIR, device=device)
    where = recorded_path(info.get("latent_data"), bundle / MEMORY_DIR, "M's latent dataset")
    if where is not None:
        info["latent_data"] = str(where)
    return memory, info


def bundle_dream_ensemble(bundle: Path, cfg: AgentConfig, device: str) -> list[Any]:
    """The dream's other Ms (``cfg.dream_ensemble``) as the bundle holds them, in order,
    each checked against the hash its ``config.json`` recorded when it was copied in.

    Raises:
        FileNotFoundError: the bundle lacks one (it was copied in at the run's start).
        ValueError: one changed since it was copied in.
    """
    from worldvae.memory import load_memory
    from worldvae.vae.io import model_sha256

    if not cfg.dream_ensemble:
        return []
    recorded = json.loads((bundle / CONFIG_FILE).read_text()).get("dream_ensemble_sha256", [])
    members = []
    for k in range(1, len(cfg.dream_ensemble) + 1):
        where = bundle / DREAM_ENSEMBLE_DIR / str(k)
        if not where.is_dir():
            raise FileNotFoundError(
                f"{where} is missing: the agent's dream ensemble member {k} "
                f"({cfg.dream_ensemble[k - 1]}); re-train the agent with --overwrite"
            )
        if k > len(recorded) or model_sha256(where) != recorded[k - 1]:
            raise ValueError(
                f"the dream ensemble member in {where} changed since the agent was trained on "
                "it; restore it or re-train the agent"
            )
        members.append(load_memory(where, device=device)[0])
    return members


def _training_env(
    cfg: AgentConfig,
    info: dict[str, Any],
    model: Any,
    memory: Any,
    memory_info: dict[str, Any],
    subprocess_envs: bool,
    out: Path,
) -> VecEnv:
    """The ``n_envs`` envs an SB3 agent trains in (``out``: its bundle): M's dream, or the real
    env's."""
    env: VecEnv
    if cfg.dream:
        env = build_dream_vec_env(
            cfg, cfg.n_envs, cfg.seed, memory, _latent_data(cfg, memory_info),
            bundle_dream_ensemble(out, cfg, cfg.device),
        )  # fmt: skip
    else:
        env = build_vec_env(
            cfg, cfg.n_envs, cfg.seed, model, subprocess=subprocess_envs, memory=memory
        )
    if isinstance(env, (VecLatentObservation, VecLatentMemoryObservation)):
        info["encode_runtime"] = env.runtime
        info["encode_precision"] = env.precision
        logger.info("encoding latents on %s in %s", env.runtime, env.precision)
    if isinstance(env, VecLatentObservation):
        info["thread_budget"] = env.thread_budget
        logger.info("encode threads %s", env.thread_budget)
    return env


def _learn(
    cfg: AgentConfig,
    out: Path,
    info: dict[str, Any],
    agent: Any,
    env: VecEnv,
    eval_env: VecEnv,
    resumed: dict[str, Any] | None,
    progress: bool,
    on_steps: Callable[[int], None] | None,
    callbacks: list[BaseCallback],
    play_env: Callable[[int], VecEnv],
) -> AgentResult:
    """SB3's learn loop with our evaluations and checkpoints, then a shortlist where ``cfg``
    asks for one (on ``play_env(n)``, ``n`` evaluation envs), then the complete bundle."""
    evaluator = EvalAndProgress(
        eval_env,
        cfg,
        out / EVAL_CSV,
        progress,
        on_steps,
        best_path=out / BEST_AGENT_FILE,
        listeners=[c for c in callbacks if isinstance(c, EvalListener)],
        keep_in=out if shortlist_size(cfg)[0] else None,
    )
    checkpointer = CheckpointAndReset(cfg, out, evaluator)
    if resumed is not None:
        checkpointer.restore(load_checkpoint(agent, out))
        env.seed(boundary_seed(cfg.seed, checkpointer.boundary))  # SB3 resets with these
        logger.info("%s: resuming from step %d", out, agent.num_timesteps)
    t = time.perf_counter()
    agent.learn(
        cfg.total_timesteps - agent.num_timesteps,
        callback=[checkpointer, evaluator, *callbacks],
        tb_log_name=cfg.run_name,
        reset_num_timesteps=resumed is None,
    )
    train_seconds = evaluator.rows[-1]["seconds"]
    save_agent(agent, out / AGENT_FILE)
    env.close()
    eval_env.close()
    final = evaluator.rows[-1]["mean_return"]
    best = best_row(evaluator.rows)
    chosen = None
    if shortlist_size(cfg)[0] and not evaluator.stopped:  # a stopped run is not chosen from
        chosen = run_shortlist(agent, cfg, out, evaluator.rows, play_env)
    if chosen is not None:
        info["choice"] = chosen
        best = next(r for r in evaluator.rows if r["steps"] == chosen["steps"])
    elif best is not None:
        restore_best_policy(out, int(best["steps"]))
    info |= {
        "status": "complete",
        "final_mean_return": final,
        "train_seconds": round(train_seconds, 3),
        "steps_per_second": round(agent.num_timesteps / max(train_seconds, 1e-9), 2),
        "steps": int(agent.num_timesteps),
        "wall_seconds": round(time.perf_counter() - t, 3),
        "best": {k: best[k] for k in ("steps", "mean_return", "std_return")} if best else None,
    }
    write_json(out / CONFIG_FILE, info)
    remove_owned(out, [CHECKPOINT_DIR])  # replay buffers are large; the agent is complete
    return AgentResult(out, final, train_seconds, info["steps_per_second"])


def _latent_data(cfg: AgentConfig, memory_info: dict[str, Any]) -> str:
    """The latent dataset M was trained on: its first frames start the dream's episodes."""
    data = memory_info.get("latent_data")
    if not data or not Path(data).is_dir():
        raise FileNotFoundError(
            f"the dream starts from the latent dataset M was trained on ({data}), which is not "
            f"there; restore it or re-run `worldvae encode-data` into {data}"
        )
    return str(data)


def _evaluator(cfg: AgentConfig, eval_env: VecEnv) -> Callable[[Any], tuple[float, float]]:
    """``evaluate(policy) -> (mean, std)`` return over ``cfg``'s evaluation episodes."""

    def evaluate(policy: Any) -> tuple[float, float]:
        returns = evaluate_policy_seeded(policy, eval_env, cfg.eval_episodes, cfg.eval_seed)
        return float(returns.mean()), float(returns.std())

    return evaluate


def bundle_env(spec: dict[str, Any]) -> VecEnv:
    """The envs of the run in the bundle ``spec["bundle"]`` (its config ``spec["cfg"]``) on the
    CPU: ``spec.get("n_envs", 1)`` of them in one VecEnv, inside M's dream when
    ``spec["dream"]``, else the real env through V and M. A train hook hands it to its worker
    processes and Ray actors (see :class:`agents.algorithms.TrainRun`).
    """
    cfg = AgentConfig.from_dict(spec["cfg"])
    bundle = Path(spec["bundle"])
    n_envs = int(spec.get("n_envs", 1))
    memory, extra = _bundle_memory(bundle, "cpu")
    if spec["dream"]:
        return build_dream_vec_env(
            cfg, n_envs, cfg.seed, memory, _latent_data(cfg, extra),
            bundle_dream_ensemble(bundle, cfg, "cpu"),
        )  # fmt: skip
    model = load_model(bundle / MODEL_DIR, device="cpu")
    return build_vec_env(cfg, n_envs, cfg.seed, model, memory=memory)


def _finish_hooked(
    out: Path, info: dict[str, Any], result: dict[str, Any], eval_env: VecEnv
) -> AgentResult:
    """Complete the bundle of an algorithm trained by its own hook."""
    eval_env.close()
    info |= {"status": "complete", **result}
    write_json(out / CONFIG_FILE, info)
    remove_owned(out, [CHECKPOINT_DIR])
    return AgentResult(
        out, result["final_mean_return"], result["train_seconds"], result["steps_per_second"]
    )
