"""Arms against each other: same env, algorithm, hyperparameters, budget, seeds, evaluation.

The arms (``pixel``, ``latent``, ``encoder`` and the controls ``random``, ``pca``, ``state``;
see :mod:`agents.arms`) are checked before anything trains, then every (arm, seed) run is
trained (finished runs are skipped on a re-run) under one progress bar, evaluated on the same
fixed-seed episodes, and aggregated as Agarwal et al. (2021) recommend (:mod:`agents.statistics`).
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from agents.agent_config import AgentConfig, resolve_config
from agents.agent_training import train_agent
from agents.algorithms import sb3_algorithm_names
from agents.arms import check_arms, get_arm
from agents.bundle import BEST_AGENT_FILE, is_complete
from agents.control_arms import arm_model_dir, vae_data_dir
from agents.environments import build_vec_env, evaluate_policy_seeded
from agents.evaluation import evaluate_bundle
from agents.progress import RunsProgress
from agents.statistics import (
    bootstrap_ci,
    first_crossing,
    iqm,
    iqm_is_mean,
    normalized_auc,
    probability_of_improvement,
    probability_of_improvement_ci,
)
from envs.registry import ENV_ID_HELP
from worldvae.atomic import atomic_open, write_json
from worldvae.config_fields import check_ranges, option, option_from
from worldvae.data.manifest import MANIFEST_NAME, Manifest
from worldvae.envspec import read_env_spec
from worldvae.records import check_dataset_for_model, record_path
from worldvae.vae.io import resolve_model_dir
from worldvae.workers import parent_bound_pool

logger = logging.getLogger(__name__)

CODE_ARMS = ("latent", "random", "pca")  # arms whose agent sees an encoder's codes: probed
MAX_SEEDS = 1000


@dataclass(frozen=True)
class CompareConfig:
    """One comparison. ``vae_frames`` are the env frames spent collecting the VAE's data.

    ``data_dir`` is the VAE's dataset (for the ``pca`` arm and the probes); by default it is
    read from the VAE run's config. ``deterministic_eval=False`` evaluates the sampled policy.
    """

    env_id: str = option(help=ENV_ID_HELP, flag="--env")
    model_dir: str | None = option(
        None, "VAE model or run directory (arms with a model)", flag="--model"
    )
    algo: str = option("ppo", "SB3 algorithm of every arm", choices=sb3_algorithm_names())
    obs_kinds: tuple[str, ...] = option(
        ("pixel", "latent"),
        "comma list of arms: pixel, latent, encoder, random (untrained encoder), pca, state, "
        "latent+h (needs --memory)",
        flag="--obs",
    )
    seeds: tuple[int, ...] = option(
        (0, 1, 2), "seeds of every arm (>= 3 recommended)", 0, 2**32 - 1, max_len=MAX_SEEDS
    )
    total_timesteps: int = option_from(
        AgentConfig, "total_timesteps", help="env steps of each run", flag="--steps"
    )
    eval_freq: int = option_from(AgentConfig, "eval_freq", 5_000)
    eval_episodes: int = option_from(AgentConfig, "eval_episodes")
    final_eval_episodes: int = option(
        10, "episodes of each run's final evaluation", 1, 100_000, flag="--final-episodes"
    )
    eval_seed: int = option_from(AgentConfig, "eval_seed")
    vae_frames: int = option(0, "frames spent on the VAE's data", 0, 10**12)
    threshold: float | None = option(
        None, "return that counts as solved (default: halfway from random to the best final)"
    )
    shifted_env_kwargs: dict[str, Any] | None = None
    env_given: dict[str, Any] = field(default_factory=dict)  # EnvSpec fields chosen explicitly
    overrides: dict[str, Any] = field(default_factory=dict)
    n_envs: int | None = option_from(AgentConfig, "n_envs", None)
    hyperparams_file: str | None = option(
        None, "a YAML file of hyperparameter overrides", flag="--hyperparams"
    )
    workers: int = option(1, "runs trained in parallel processes", 1, 256)
    subprocess_envs: bool = option(False, "run each run's envs in subprocesses", flag="--subproc")
    data_dir: str | None = option(
        None,
        "the VAE's dataset, for the pca arm and the probes (default: read from the VAE run)",
        flag="--data",
    )
    deterministic_eval: bool = option_from(
        AgentConfig, "deterministic_eval", flag="--stochastic-eval"
    )
    probe: bool = option(
        True, "fit linear probes from each code arm's encoder to the env's true state"
    )
    memory_dir: str | None = option_from(  # M, for the latent+h arm
        AgentConfig, "memory_dir", help="M's run directory (for the latent+h arm)", flag="--memory"
    )
    max_train_seconds: float | None = option_from(  # the same wall-clock budget for every run
        AgentConfig,
        "max_train_seconds",
        help="training wall-clock budget of each run in seconds, evaluation excluded",
    )

    runtime: str = option_from(AgentConfig, "runtime")

    def __post_init__(self) -> None:
        check_ranges(self)

    def resolved_data_dir(self) -> str | None:
        """The VAE's dataset: ``data_dir``, else the one the VAE run records (None if
        unknown), checked against the env spec the model records.

        Raises:
            ValueError: the dataset's frames are not those the model was trained on (the
                dataset, the model and the fields that differ are named).
        """
        data_dir = self.data_dir
        if data_dir is None and self.model_dir:
            data_dir = vae_data_dir(self.model_dir)
        if data_dir is not None and self.model_dir and (Path(data_dir) / MANIFEST_NAME).is_file():
            check_dataset_for_model(data_dir, self.model_dir)
        return data_dir

    def arm_env_given(self) -> dict[str, Any]:
        """The env spec every arm gets, as explicit choices: the spec the VAE records (else its
        dataset's), with ``env_given`` checked against it, so the pixel arm sees the VAE's
        frames too; without either, ``env_given``."""
        spec = read_env_spec(self.model_dir) if self.model_dir else None
        where = f"the model {self.model_dir}"
        data_dir = self.resolved_data_dir()
        if spec is None and data_dir is not None:
            manifest = Manifest.load(data_dir)
            spec, where = manifest.env_spec, f"the dataset {data_dir}"
        if spec is None:
            return dict(self.env_given)
        return spec.resolve(self.env_given, where).options()

    def agent_config(self, obs: str, seed: int, model_dir: str | None = None) -> AgentConfig:
        """The agent config of one run; ``model_dir`` is the arm's encoder (see :mod:`agents.control_arms`)."""
        fields: dict[str, Any] = {
            "eval_freq": self.eval_freq,
            "eval_episodes": self.eval_episodes,
            "eval_seed": self.eval_seed,
            "env_given": self.arm_env_given(),
            "deterministic_eval": self.deterministic_eval,
            "max_train_seconds": self.max_train_seconds,
            "runtime": self.runtime,
        }
        if self.n_envs is not None:
            fields["n_envs"] = self.n_envs
        if model_dir is None and get_arm(obs).model == "vae":
            model_dir = self.model_dir
        if obs == "latent+h":
            fields["memory_dir"] = self.memory_dir
        return resolve_config(
            self.env_id,
            obs,
            self.algo,
            model_dir,
            self.total_timesteps,
            seed,
            self.hyperparams_file,
            overrides=self.overrides,
            **fields,
        )


@dataclass(frozen=True)
class Run:
    """One (observation kind, seed) cell of a comparison and where its agent bundle goes."""

    obs: str
    seed: int
    config: AgentConfig
    path: Path


def plan_runs(cfg: CompareConfig, out_dir: str | Path) -> list[Run]:
    """Check the arms, build the controls' encoders, and list every run (arms, then seeds).

    Raises:
        ValueError: an arm cannot run (all problems named at once), before anything trains.
    """
    data_dir = cfg.resolved_data_dir()
    check_arms(cfg.obs_kinds, cfg.env_id, cfg.model_dir, data_dir)
    out = Path(out_dir)
    runs = []
    for obs in cfg.obs_kinds:
        for seed in cfg.seeds:
            model_dir = arm_model_dir(obs, cfg.model_dir, data_dir, out / "controls", seed)
            acfg = cfg.agent_config(obs, seed, model_dir)
            runs.append(Run(obs, seed, acfg, out / "runs" / acfg.run_name))
    return runs


def _train_run_in_worker(run: Run, subprocess_envs: bool) -> bool:
    import torch

    torch.set_num_threads(1)  # parallel runs share the cores; one thread each avoids thrashing
    r = train_agent(
        run.config, run.path, skip_complete=True, progress=False, subprocess_envs=subprocess_envs
    )
    return r.skipped


def _steps_logged(run: Run) -> int:
    """Env steps a run has reached, from its last evaluation row (0 before the first)."""
    try:
        lines = (run.path / "eval.csv").read_text().splitlines()
        return int(float(lines[-1].split(",")[0])) if len(lines) > 1 else 0
    except (OSError, ValueError, IndexError):
        return 0


def train_runs(
    runs: list[Run],
    workers: int,
    subprocess_envs: bool,
    progress: bool,
    callbacks: list[BaseCallback] | None = None,
) -> None:
    """Train every run not yet complete under one progress bar (:class:`RunsProgress`).

    Under a wall-clock budget (``max_train_seconds``) the bar counts seconds of the stage's
    budget (each run's, ``workers`` runs at a time), so its ETA is time, with the env steps
    beside it; otherwise env steps of the runs' total. It moves every second, from the clock
    and the steps each run reports; with ``workers > 1`` runs train in parallel processes and
    their steps come from their evaluation logs. ``callbacks`` (SB3 callbacks) are handed to
    every run when they train in this process (``workers == 1``).
    """
    todo = []
    for run in runs:
        if is_complete(run.path):
            logger.info("%s skipped (complete)", run.config.run_name)
        else:
            todo.append(run)
    if not todo:
        return
    if callbacks and workers > 1:
        raise ValueError("callbacks run in this process: train with workers=1 to pass them")
    budgets = {run.config.max_train_seconds for run in todo}
    seconds = budgets.pop() if len(budgets) == 1 else None  # one clock for every run, or steps
    slots = min(workers, len(todo))
    with RunsProgress([r.config.total_timesteps for r in todo], seconds, slots, progress) as bar:
        if slots > 1:
            _train_in_processes(todo, slots, subprocess_envs, bar)
            return
        for i, run in enumerate(todo):
            bar.start(i)
            train_agent(
                run.config,
                run.path,
                skip_complete=True,
                progress=False,
                subprocess_envs=subprocess_envs,
                on_steps=functools.partial(bar.add_steps, i),
                callbacks=callbacks,
            )
            bar.finish(i, _steps_logged(run))
            logger.info("%s trained", run.config.run_name)


def _train_in_processes(
    runs: list[Run], slots: int, subprocess_envs: bool, bar: RunsProgress
) -> None:
    """Train ``runs`` in ``slots`` worker processes, telling ``bar`` of their progress: a
    run's clock starts when it writes its first evaluation row (``eval.csv``, written again on
    resume) in this stage, so a worker's start-up is not counted as its training."""
    since = time.time()
    with parent_bound_pool(slots) as pool:
        futures: dict[Future[bool], int] = {
            pool.submit(_train_run_in_worker, run, subprocess_envs): i for i, run in enumerate(runs)
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for f in (*done, *pending):
                i = futures[f]
                if not bar.started(i) and (at := _first_row_time(runs[i], since)) is not None:
                    bar.start(i, at)
                bar.set_steps(i, _steps_logged(runs[i]))
            for f in done:
                f.result()  # re-raise a failed run's error here
                bar.finish(futures[f])
                logger.info("%s trained", runs[futures[f]].config.run_name)


def _first_row_time(run: Run, since: float) -> float | None:
    """When (``time.perf_counter``'s clock) ``run`` wrote ``eval.csv``, if it did after
    ``since`` (``time.time``'s clock); None otherwise."""
    try:
        written = (run.path / "eval.csv").stat().st_mtime
    except OSError:
        return None
    if written < since:
        return None
    return time.perf_counter() - max(0.0, time.time() - written)


def _read_curve(bundle: Path) -> dict[str, np.ndarray]:
    with open(bundle / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    return {
        k: np.array([float(r[k]) for r in rows])
        for k in ("steps", "seconds", "wall_seconds", "mean_return")
    }


def best_policy(runs_dir: Path, runs: list[str]) -> tuple[str, str, int]:
    """The run, policy (``"best"`` or ``"final"``) and step of the highest periodic
    evaluation among ``runs``, or, where every run chose its best policy by a shortlist
    (:mod:`agents.policy_shortlist`), of the best on its shortlist's episodes (a best
    evaluation, often the luckiest of many, is not weighed against them); a run that kept no
    best policy offers its final one."""
    infos = {run: json.loads((runs_dir / run / "config.json").read_text()) for run in runs}
    by_choice = all(info.get("choice") for info in infos.values())
    candidates = []
    for run, info in infos.items():
        kept = info.get("best") and (runs_dir / run / BEST_AGENT_FILE).is_file()
        if kept and by_choice:
            candidates.append((info["choice"]["mean_return"], run, "best", info["best"]["steps"]))
        elif kept:
            candidates.append((info["best"]["mean_return"], run, "best", info["best"]["steps"]))
        else:
            candidates.append((info["final_mean_return"], run, "final", info["steps"]))
    _, run, which, step = max(candidates, key=lambda c: c[0])
    return run, which, int(step)


def random_baseline(cfg: AgentConfig, n_episodes: int, seed: int) -> np.ndarray:
    """Returns of a uniformly random policy on the same evaluation episodes."""

    class Random:
        def __init__(self, space: Any):
            self.space = space
            self.space.seed(seed)

        def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
            return np.array([self.space.sample()]), None

    pixel = AgentConfig.from_dict(
        cfg.to_dict() | {"obs": "pixel", "model_dir": None, "obs_options": {}}
    )
    venv = build_vec_env(pixel, 1, 0, None)
    returns = evaluate_policy_seeded(Random(venv.action_space), venv, n_episodes, seed)
    venv.close()
    return returns


@dataclass
class ComparisonResult:
    out_dir: Path
    runs: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    random_return: float
    threshold: float
    curves: dict[str, list[dict[str, np.ndarray]]]
    config: CompareConfig
    improvement: dict[str, dict[str, Any]] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def evaluate_run(run: Run, cfg: CompareConfig) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The result row of one trained run (final and shifted returns, AUC, speed) and its curve."""
    info = json.loads((run.path / "config.json").read_text())
    final = evaluate_bundle(
        run.path,
        cfg.final_eval_episodes,
        cfg.eval_seed,
        device="cpu",
        deterministic=cfg.deterministic_eval,
    )
    curve = _read_curve(run.path)
    row: dict[str, Any] = {
        "obs": run.obs,
        "seed": run.seed,
        "run": run.config.run_name,
        "final_return_mean": final.mean,
        "final_return_std": final.std,
        "auc": normalized_auc(curve["steps"], curve["mean_return"]),
        "train_seconds": info["train_seconds"],
        "steps_per_second": info["steps_per_second"],
        "budget_steps": run.config.total_timesteps,
        "steps_trained": int(info["steps"]),
    }
    if cfg.shifted_env_kwargs:
        row["shifted_return_mean"] = _shifted_return(run.path, run.config, cfg)
    return row, curve


def choose_threshold(cfg: CompareConfig, random_return: float, rows: list[dict[str, Any]]) -> float:
    """``cfg.threshold``, or halfway from the random policy to the best final return."""
    if cfg.threshold is not None:
        return cfg.threshold
    best = max(r["final_return_mean"] for r in rows)
    return float(random_return + 0.5 * (best - random_return))


def add_threshold_columns(
    rows: list[dict[str, Any]],
    curves: list[dict[str, np.ndarray]],
    threshold: float,
    vae_frames: int,
) -> None:
    """Add steps and seconds to ``threshold`` (and steps counting the VAE's frames) to each row.

    The evaluation before training (step 0) never counts as reaching the threshold.
    """
    for row, curve in zip(rows, curves, strict=True):
        steps = first_crossing(curve["steps"], curve["mean_return"], threshold)
        row["steps_to_threshold"] = steps
        row["seconds_to_threshold"] = first_crossing(
            curve["seconds"], curve["mean_return"], threshold, steps=curve["steps"]
        )
        pretraining = vae_frames if get_arm(row["obs"]).model is not None else 0
        row["steps_to_threshold_with_pretraining"] = None if steps is None else steps + pretraining


def run_comparison(
    cfg: CompareConfig, out_dir: str | Path, progress: bool = True
) -> ComparisonResult:
    """Train every (arm, seed) pair, skipping finished ones, then evaluate and aggregate.

    Results go to ``out_dir/runs/RUN_NAME`` (agent bundles), ``out_dir/controls/`` (the
    control arms' encoders) and ``out_dir/results.{csv,json}``. The steps: :func:`plan_runs`,
    :func:`train_runs`, :func:`evaluate_comparison`, :func:`write_results`.
    """
    t = time.perf_counter()
    runs = plan_runs(cfg, out_dir)
    train_runs(runs, cfg.workers, cfg.subprocess_envs, progress)
    result = evaluate_comparison(cfg, runs, out_dir, {"train": time.perf_counter() - t})
    write_results(result)
    return result


def evaluate_comparison(
    cfg: CompareConfig, runs: list[Run], out_dir: str | Path, timings: dict[str, float]
) -> ComparisonResult:
    """Evaluate trained runs on the same fixed seeds and aggregate them: the random policy's
    score, the threshold, per-arm summaries with intervals, improvements over pixel and the
    linear probes. ``timings`` (seconds per stage so far) gains ``evaluate`` and ``probe``."""
    timings = dict(timings)
    t = time.perf_counter()
    random = random_baseline(runs[0].config, cfg.final_eval_episodes, cfg.eval_seed)
    evaluated = [evaluate_run(run, cfg) for run in runs]
    rows = [row for row, _ in evaluated]
    run_curves = [curve for _, curve in evaluated]  # one per row
    threshold = choose_threshold(cfg, float(random.mean()), rows)
    add_threshold_columns(rows, run_curves, threshold, cfg.vae_frames)
    curves = {
        obs: [c for r, c in zip(rows, run_curves, strict=True) if r["obs"] == obs]
        for obs in cfg.obs_kinds
    }
    summary = summarize(rows, cfg.obs_kinds)
    improvement = improvements(rows, cfg.obs_kinds)
    timings["evaluate"] = time.perf_counter() - t
    t = time.perf_counter()
    probes = probe_arms(cfg, runs) if cfg.probe else {}
    timings["probe"] = time.perf_counter() - t
    return ComparisonResult(
        Path(out_dir),
        rows,
        summary,
        float(random.mean()),
        threshold,
        curves,
        cfg,
        improvement,
        probes,
        {k: round(v, 1) for k, v in timings.items()},
    )


def probe_arms(cfg: CompareConfig, runs: list[Run]) -> dict[str, Any]:
    """Linear-probe R^2 from each code arm's encoder to the true state, on held-out episodes.

    Empty when the dataset holds no states (or is unknown). The random arm is probed through
    its first seed's encoder.
    """
    from worldvae.data import EpisodeDataset
    from worldvae.encoders import load_encoder
    from worldvae.probes import probe_dataset

    data_dir = cfg.resolved_data_dir()
    if data_dir is None:
        return {}
    dataset = EpisodeDataset(data_dir)
    if dataset.state_names is None or not dataset.split("val"):
        return {}
    out: dict[str, Any] = {"state_names": list(dataset.state_names), "r2": {}}
    for obs in CODE_ARMS:
        run = next((r for r in runs if r.obs == obs), None)
        if run is None or run.config.model_dir is None:
            continue
        encoder = load_encoder(resolve_model_dir(run.config.model_dir), device="cpu")
        result = probe_dataset(lambda f, e=encoder: e.encode(f), dataset)  # type: ignore[misc]
        out["r2"][obs] = result.as_dict()
        out["n_train"], out["n_test"] = result.n_train, result.n_test
    return out


def _shifted_return(bundle: Path, acfg: AgentConfig, cfg: CompareConfig) -> float:
    """Zero-shot return of a trained agent on the shifted env (e.g. domain_randomize=True)."""
    from agents.bundle import load_bundle

    b = load_bundle(bundle, device="cpu")
    # gymnasium: envpool has no options such as domain_randomize.
    shifted = acfg.with_env(
        env_kwargs={**acfg.env.env_kwargs, **(cfg.shifted_env_kwargs or {})}, backend="gymnasium"
    )
    venv = build_vec_env(shifted, 1, 0, b.model, memory=b.memory)
    returns = evaluate_policy_seeded(
        b.agent, venv, cfg.final_eval_episodes, cfg.eval_seed, cfg.deterministic_eval
    )
    venv.close()
    return float(returns.mean())


def _censored(rows: list[dict[str, Any]], key: str, cap_key: str) -> np.ndarray:
    """Per-run values of ``key``; a run that never reached the threshold counts as ``cap_key``."""
    return np.array([r[cap_key] if r[key] is None else r[key] for r in rows], dtype=float)


def summarize(runs: list[dict[str, Any]], obs_kinds: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per arm: mean +- std, IQM with its stratified-bootstrap 95% CI, AUC, speed, thresholds.

    Steps and seconds to the threshold are summarised two ways: the median over the seeds
    that reached it, and the IQM over all seeds with its CI, where a seed that never reached
    it counts as what it trained (its env steps, or its training seconds): a lower bound on
    its true value. Under a wall-clock budget the step budget is a cap the run never
    reaches, so the steps it did train are the bound, not the cap.
    """
    out: dict[str, dict[str, Any]] = {}
    for obs in obs_kinds:
        rows = [r for r in runs if r["obs"] == obs]
        finals = np.array([r["final_return_mean"] for r in rows])
        low, high = bootstrap_ci(finals)
        reached = [r["steps_to_threshold"] for r in rows if r["steps_to_threshold"] is not None]
        reached_s = [
            r["seconds_to_threshold"] for r in rows if r["seconds_to_threshold"] is not None
        ]
        reached_p = [
            r["steps_to_threshold_with_pretraining"]
            for r in rows
            if r["steps_to_threshold_with_pretraining"] is not None
        ]
        steps_all = _censored(rows, "steps_to_threshold", "steps_trained")
        secs_all = _censored(rows, "seconds_to_threshold", "train_seconds")
        out[obs] = {
            "n_seeds": len(rows),
            "iqm_is_mean": iqm_is_mean(len(rows)),
            "final_mean": float(finals.mean()),
            "final_std": float(finals.std()),
            "iqm": iqm(finals),
            "iqm_ci": [low, high],
            "auc": float(np.mean([r["auc"] for r in rows])),
            "steps_per_second": float(np.mean([r["steps_per_second"] for r in rows])),
            "train_seconds": float(np.mean([r["train_seconds"] for r in rows])),
            "seeds_reaching_threshold": len(reached),
            "steps_to_threshold": float(np.median(reached)) if reached else None,
            "seconds_to_threshold": float(np.median(reached_s)) if reached_s else None,
            "steps_to_threshold_with_pretraining": float(np.median(reached_p))
            if reached_p
            else None,
            "steps_to_threshold_iqm": iqm(steps_all),
            "steps_to_threshold_iqm_ci": list(bootstrap_ci(steps_all)),
            "seconds_to_threshold_iqm": iqm(secs_all),
            "seconds_to_threshold_iqm_ci": list(bootstrap_ci(secs_all)),
        }
        if "shifted_return_mean" in rows[0]:
            out[obs]["shifted_mean"] = float(np.mean([r["shifted_return_mean"] for r in rows]))
    return out


def improvements(
    runs: list[dict[str, Any]], obs_kinds: tuple[str, ...], baseline: str = "pixel"
) -> dict[str, dict[str, Any]]:
    """``P(arm > baseline)`` on the final return, with its 95% CI, for every other arm."""
    if baseline not in obs_kinds:
        return {}
    base = [r["final_return_mean"] for r in runs if r["obs"] == baseline]
    out: dict[str, dict[str, Any]] = {}
    for obs in obs_kinds:
        if obs == baseline:
            continue
        arm = [r["final_return_mean"] for r in runs if r["obs"] == obs]
        low, high = probability_of_improvement_ci(arm, base)
        out[obs] = {
            "against": baseline,
            "probability": probability_of_improvement(arm, base),
            "ci": [low, high],
        }
    return out


def write_results(result: ComparisonResult) -> None:
    out = result.out_dir
    fields = sorted(
        {k for r in result.runs for k in r},
        key=lambda k: list(result.runs[0]).index(k) if k in result.runs[0] else 99,
    )
    with atomic_open(out / "results.csv") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(result.runs)
    write_json(
        out / "results.json",
        {
            "runs": result.runs,
            "summary": result.summary,
            "probability_of_improvement": result.improvement,
            "probes": result.probes,
            "random_return": result.random_return,
            "threshold": result.threshold,
            "timings": result.timings,
            "config": recorded_config(result.config),
        },
    )


def recorded_config(cfg: CompareConfig) -> dict[str, Any]:
    """``cfg`` as ``results.json`` records it: its folders and files absolute, so that the
    record names the same ones read from any working folder (:mod:`worldvae.records`)."""
    d = asdict(cfg)
    for key in ("model_dir", "data_dir", "memory_dir", "hyperparams_file"):
        if d[key]:
            d[key] = record_path(d[key])
    return d
