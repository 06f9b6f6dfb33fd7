"""Pixel versus latent agents: same env, algorithm, hyperparameters, budget, seeds, evaluation."""

from __future__ import annotations

import csv
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import AgentConfig, resolve_config
from agents.environments import build_vec_env, evaluate_policy_seeded
from agents.evaluation import evaluate_bundle
from agents.statistics import bootstrap_ci, first_crossing, iqm, normalized_auc
from agents.training import train_agent
from worldvae.atomic import atomic_open, write_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompareConfig:
    """One comparison. ``vae_frames`` are the env frames spent collecting the VAE's data."""

    env_id: str
    model_dir: str
    algo: str = "ppo"
    obs_kinds: tuple[str, ...] = ("pixel", "latent")
    seeds: tuple[int, ...] = (0, 1, 2)
    total_timesteps: int = 50_000
    eval_freq: int = 5_000
    eval_episodes: int = 5
    final_eval_episodes: int = 10
    eval_seed: int = 10_000
    vae_frames: int = 0
    threshold: float | None = None
    shifted_env_kwargs: dict[str, Any] | None = None
    env_options: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    n_envs: int | None = None
    hyperparams_file: str | None = None
    workers: int = 1
    subprocess_envs: bool = False

    def agent_config(self, obs: str, seed: int) -> AgentConfig:
        fields: dict[str, Any] = {
            "eval_freq": self.eval_freq,
            "eval_episodes": self.eval_episodes,
            "eval_seed": self.eval_seed,
            "env_options": self.env_options,
        }
        if self.n_envs is not None:
            fields["n_envs"] = self.n_envs
        return resolve_config(
            self.env_id,
            obs,
            self.algo,
            self.model_dir if obs != "pixel" else None,
            self.total_timesteps,
            seed,
            self.hyperparams_file,
            overrides=self.overrides,
            **fields,
        )


def _train_one(cfg: AgentConfig, out: str, subprocess_envs: bool) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)  # parallel runs share the cores; one thread each avoids thrashing
    r = train_agent(cfg, out, skip_complete=True, progress=False, subprocess_envs=subprocess_envs)
    return {"path": str(r.path), "skipped": r.skipped}


def _read_curve(bundle: Path) -> dict[str, np.ndarray]:
    with open(bundle / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    return {
        k: np.array([float(r[k]) for r in rows])
        for k in ("steps", "seconds", "wall_seconds", "mean_return")
    }


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


def run_comparison(
    cfg: CompareConfig, out_dir: str | Path, progress: bool = True
) -> ComparisonResult:
    """Train every (observation kind, seed) pair, skipping finished ones, then aggregate.

    Results go to ``out_dir/runs/RUN_NAME`` (agent bundles) and ``out_dir/results.{csv,json}``.
    """
    out = Path(out_dir)
    jobs = [(obs, seed, cfg.agent_config(obs, seed)) for obs in cfg.obs_kinds for seed in cfg.seeds]
    paths = {(obs, seed): out / "runs" / acfg.run_name for obs, seed, acfg in jobs}
    if cfg.workers > 1:
        with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_train_one, acfg, str(paths[(obs, seed)]), cfg.subprocess_envs)
                for obs, seed, acfg in jobs
            ]
            for f in futures:
                f.result()
    else:
        for obs, seed, acfg in jobs:
            r = train_agent(
                acfg,
                paths[(obs, seed)],
                skip_complete=True,
                progress=progress,
                subprocess_envs=cfg.subprocess_envs,
            )
            logger.info(
                "%s %s: %s", acfg.run_name, "skipped (complete)" if r.skipped else "trained", r.path
            )

    random = random_baseline(jobs[0][2], cfg.final_eval_episodes, cfg.eval_seed)
    runs: list[dict[str, Any]] = []
    run_curves: list[dict[str, np.ndarray]] = []  # one per row of ``runs``
    for obs, seed, acfg in jobs:
        bundle = paths[(obs, seed)]
        info = json.loads((bundle / "config.json").read_text())
        final = evaluate_bundle(bundle, cfg.final_eval_episodes, cfg.eval_seed, device="cpu")
        curve = _read_curve(bundle)
        run_curves.append(curve)
        row: dict[str, Any] = {
            "obs": obs,
            "seed": seed,
            "run": acfg.run_name,
            "final_return_mean": final.mean,
            "final_return_std": final.std,
            "auc": normalized_auc(curve["steps"], curve["mean_return"]),
            "train_seconds": info["train_seconds"],
            "steps_per_second": info["steps_per_second"],
        }
        if cfg.shifted_env_kwargs:
            row["shifted_return_mean"] = _shifted_return(bundle, acfg, cfg)
        runs.append(row)
    best = max(r["final_return_mean"] for r in runs)
    threshold = (
        cfg.threshold
        if cfg.threshold is not None
        else float(random.mean() + 0.5 * (best - random.mean()))
    )
    for row, curve in zip(runs, run_curves, strict=True):
        steps = first_crossing(curve["steps"], curve["mean_return"], threshold)
        row["steps_to_threshold"] = steps
        row["seconds_to_threshold"] = first_crossing(
            curve["seconds"], curve["mean_return"], threshold
        )
        row["steps_to_threshold_with_pretraining"] = (
            None if steps is None else steps + (cfg.vae_frames if row["obs"] != "pixel" else 0)
        )
    curves = {
        obs: [c for r, c in zip(runs, run_curves, strict=True) if r["obs"] == obs]
        for obs in cfg.obs_kinds
    }
    summary = summarize(runs, cfg.obs_kinds)
    result = ComparisonResult(out, runs, summary, float(random.mean()), threshold, curves, cfg)
    write_results(result)
    return result


def _shifted_return(bundle: Path, acfg: AgentConfig, cfg: CompareConfig) -> float:
    """Zero-shot return of a trained agent on the shifted env (e.g. domain_randomize=True)."""
    from agents.bundle import load_bundle

    b = load_bundle(bundle, device="cpu")
    shifted_options = acfg.env_options | {
        "env_kwargs": {**acfg.env_options.get("env_kwargs", {}), **(cfg.shifted_env_kwargs or {})}
    }
    shifted = AgentConfig.from_dict(acfg.to_dict() | {"env_options": shifted_options})
    venv = build_vec_env(shifted, 1, 0, b.model)
    returns = evaluate_policy_seeded(b.agent, venv, cfg.final_eval_episodes, cfg.eval_seed)
    venv.close()
    return float(returns.mean())


def summarize(runs: list[dict[str, Any]], obs_kinds: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per observation kind: mean +- std, IQM with 95% bootstrap CI, AUC, speed, thresholds."""
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
        out[obs] = {
            "n_seeds": len(rows),
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
        }
        if "shifted_return_mean" in rows[0]:
            out[obs]["shifted_mean"] = float(np.mean([r["shifted_return_mean"] for r in rows]))
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
            "random_return": result.random_return,
            "threshold": result.threshold,
            "config": asdict(result.config),
        },
    )
