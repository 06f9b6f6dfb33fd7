"""Training one SB3 agent on pixels, on latents, or through a pretrained encoder."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from agents.arms import get_arm
from agents.bundle import (
    AGENT_FILE,
    CONFIG_FILE,
    EVAL_CSV,
    copy_model,
    is_complete,
    policy_kwargs,
    policy_name,
)
from agents.config import AgentConfig, algo_class
from agents.environments import build_vec_env, evaluate_policy_seeded
from worldvae.atomic import atomic_path, write_json
from worldvae.encoders import load_encoder
from worldvae.versions import library_versions

logger = logging.getLogger(__name__)


class EvalAndProgress(BaseCallback):
    """Evaluates every ``eval_freq`` env steps on fixed seeds; shows a progress bar.

    Each evaluation appends a row to ``eval.csv`` (steps, training seconds excluding
    evaluation, wall seconds, mean and std return) and logs ``eval/mean_return``.
    """

    def __init__(
        self,
        eval_env: Any,
        cfg: AgentConfig,
        csv_path: Path,
        progress: bool,
        on_steps: Callable[[int], None] | None = None,
    ):
        super().__init__()
        self.eval_env, self.cfg, self.csv_path = eval_env, cfg, csv_path
        self.on_steps = on_steps
        self.rows: list[dict[str, float]] = []
        self.progress = progress
        self.next_eval = 0
        self.eval_seconds = 0.0

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=self.cfg.total_timesteps,
            unit="step",
            desc=self.cfg.run_name,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        self._evaluate()

    def _evaluate(self) -> None:
        t = time.perf_counter()
        returns = evaluate_policy_seeded(
            self.model,
            self.eval_env,
            self.cfg.eval_episodes,
            self.cfg.eval_seed,
            deterministic=self.cfg.deterministic_eval,
        )
        self.eval_seconds += time.perf_counter() - t
        wall = time.perf_counter() - self.start
        row = {
            "steps": int(self.num_timesteps),
            "seconds": round(wall - self.eval_seconds, 3),
            "wall_seconds": round(wall, 3),
            "mean_return": float(returns.mean()),
            "std_return": float(returns.std()),
        }
        self.rows.append(row)
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerows(self.rows)
        self.logger.record("eval/mean_return", row["mean_return"])
        self.logger.record("charts/SPS", self.num_timesteps / max(row["seconds"], 1e-9))
        self.bar.set_postfix(eval_return=f"{row['mean_return']:.1f}", refresh=False)
        self.next_eval = self.num_timesteps + self.cfg.eval_freq

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        if self.on_steps is not None:
            self.on_steps(self.training_env.num_envs)
        if self.num_timesteps >= self.next_eval:
            self._evaluate()
        return True

    def _on_training_end(self) -> None:
        if not self.rows or self.rows[-1]["steps"] != self.num_timesteps:
            self._evaluate()
        self.bar.close()


@dataclass
class AgentResult:
    path: Path
    final_mean_return: float
    train_seconds: float
    steps_per_second: float
    skipped: bool = False


def train_agent(
    cfg: AgentConfig,
    out_dir: str | Path,
    overwrite: bool = False,
    skip_complete: bool = False,
    progress: bool = True,
    subprocess_envs: bool = False,
    on_steps: Callable[[int], None] | None = None,
) -> AgentResult:
    """Train ``cfg`` into the bundle ``out_dir``.

    A complete bundle is refused unless ``overwrite`` (replace) or ``skip_complete`` (return
    it as is, for resumable comparisons). An unfinished bundle (a killed run) is restarted.
    ``on_steps(n)`` is called after every vectorised step with the env steps it took.
    """
    import torch

    out = Path(out_dir)
    if is_complete(out):
        if skip_complete:
            done = json.loads((out / CONFIG_FILE).read_text())
            return AgentResult(
                out,
                done["final_mean_return"],
                done["train_seconds"],
                done["steps_per_second"],
                skipped=True,
            )
        if not overwrite:
            raise FileExistsError(
                f"agent directory {out} already holds a trained agent; pass --overwrite to replace it or choose another --out"
            )
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    info: dict[str, Any] = {
        "agent": cfg.to_dict(),
        "status": "training",
        "versions": library_versions(),
    }
    if cfg.model_dir:
        info["model_sha256"] = copy_model(cfg.model_dir, out)
        info["model_source"] = str(cfg.model_dir)
    memory: Any = None
    memory_info: dict[str, Any] = {}
    if cfg.memory_dir:
        from agents.bundle import MEMORY_DIR, copy_memory
        from worldvae.memory import load_memory

        info["memory_sha256"] = copy_memory(cfg.memory_dir, out, info["model_sha256"])
        info["memory_source"] = str(cfg.memory_dir)
        memory, memory_info = load_memory(out / MEMORY_DIR, device=cfg.device)
    write_json(out / CONFIG_FILE, info)
    model = load_encoder(out / "model", device=cfg.device) if get_arm(cfg.obs).loads_model else None
    torch.manual_seed(cfg.seed)
    eval_env = build_vec_env(cfg, 1, cfg.eval_seed, model, memory=memory)
    if cfg.algo == "cmaes":
        return _train_cmaes(cfg, out, info, eval_env, memory_info, progress)
    if cfg.dream:
        from agents.dream import build_dream_vec_env

        env = build_dream_vec_env(cfg, cfg.n_envs, cfg.seed, memory, _latent_data(cfg, memory_info))
    else:
        env = build_vec_env(
            cfg, cfg.n_envs, cfg.seed, model, subprocess=subprocess_envs, memory=memory
        )
    kwargs = {k: v for k, v in cfg.algo_kwargs.items() if k != "policy_kwargs"}
    agent = algo_class(cfg.algo)(
        policy_name(cfg),
        env,
        seed=cfg.seed,
        device=cfg.device,
        tensorboard_log=str(out / "tb"),
        policy_kwargs=policy_kwargs(cfg, out),
        verbose=0,
        **kwargs,
    )
    callback = EvalAndProgress(eval_env, cfg, out / EVAL_CSV, progress, on_steps)
    t = time.perf_counter()
    agent.learn(cfg.total_timesteps, callback=callback, tb_log_name=cfg.run_name)
    wall = time.perf_counter() - t
    train_seconds = wall - callback.eval_seconds
    with atomic_path(out / AGENT_FILE) as tmp:
        agent.save(str(tmp))
        if not tmp.exists():  # SB3 appends .zip when the name lacks it
            Path(f"{tmp}.zip").replace(tmp)
    env.close()
    eval_env.close()
    final = callback.rows[-1]["mean_return"]
    info |= {
        "status": "complete",
        "final_mean_return": final,
        "train_seconds": round(train_seconds, 3),
        "steps_per_second": round(agent.num_timesteps / max(train_seconds, 1e-9), 2),
        "steps": int(agent.num_timesteps),
    }
    write_json(out / CONFIG_FILE, info)
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


def _train_cmaes(
    cfg: AgentConfig,
    out: Path,
    info: dict[str, Any],
    eval_env: Any,
    memory_info: dict[str, Any],
    progress: bool,
) -> AgentResult:
    """World Models' controller: CMA-ES on a linear policy over ``[z, h]``."""
    from agents.cma_es import CMAESConfig, train_controller

    if cfg.obs != "latent+h":
        raise ValueError("the CMA-ES controller reads [z, h]: use --obs latent+h with --memory")
    spec = {
        "cfg": cfg.to_dict(),
        "bundle": str(out),
        "dream": cfg.dream,
        "latent_data": _latent_data(cfg, memory_info) if cfg.dream else "",
        "rollouts": CMAESConfig.from_dict(cfg.algo_kwargs).rollouts,
        "obs_dim": int(eval_env.observation_space.shape[0]),
        "action_space": eval_env.action_space,
    }

    def evaluate(controller: Any) -> tuple[float, float]:
        returns = evaluate_policy_seeded(controller, eval_env, cfg.eval_episodes, cfg.eval_seed)
        return float(returns.mean()), float(returns.std())

    result = train_controller(
        spec,
        CMAESConfig.from_dict(cfg.algo_kwargs),
        cfg.total_timesteps,
        cfg.seed,
        out,
        evaluate,
        cfg.eval_freq,
        progress,
    )
    eval_env.close()
    info |= {"status": "complete", **result}
    write_json(out / CONFIG_FILE, info)
    return AgentResult(
        out, result["final_mean_return"], result["train_seconds"], result["steps_per_second"]
    )
