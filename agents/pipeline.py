"""The main job: collect -> train VAE -> compare pixel and latent agents -> report.

Every stage resumes: the collector skips finished episodes, the VAE run continues from its
last checkpoint (or is skipped when finished), finished agents are skipped, and the report is
rebuilt from the results.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from agents.arms import ARMS, check_arms
from agents.bundle import BEST_AGENT_FILE
from agents.comparison import CompareConfig, ComparisonResult, run_comparison
from agents.evaluation import evaluate_bundle
from agents.report import write_report
from envs import collect
from envs.backends import BACKENDS
from envs.cluster import cluster_cpus, connect_ray, uses_ray
from envs.collector import CollectConfig
from envs.factory import (
    MAX_EPISODE_STEPS,
    MAX_FRAME_SIZE,
    MAX_FRAME_SKIP,
    MIN_FRAME_SIZE,
    env_options,
    resolve_env_options,
)
from envs.registry import ENV_ID_HELP
from worldvae.atomic import write_json
from worldvae.config_fields import check_ranges, option, option_from
from worldvae.data import EpisodeDataset
from worldvae.diagnostics import inspect_model
from worldvae.memory.trainer import MemoryTrainConfig
from worldvae.vae import load_model
from worldvae.vae.trainer import TrainConfig, is_finished, train_autoencoder
from worldvae.versions import machine_description

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """Budgets of every stage."""

    env_id: str = option(help=ENV_ID_HELP, flag="--env")
    frame_size: int = option(64, "square frame side", MIN_FRAME_SIZE, MAX_FRAME_SIZE)
    collect_frames: int = option_from(
        CollectConfig, "n_frames", 20_000, "frames collected for the VAE"
    )
    collect_policy: str = option_from(
        CollectConfig, "policy", help="collection policy: random | brownian | sb3:ALGO:PATH"
    )
    max_episode_steps: int | None = option(
        None, "episode time limit (default: the env's)", 1, MAX_EPISODE_STEPS
    )
    crop: tuple[int, int, int, int] | None = option(
        None, "pixels off TOP,BOTTOM,LEFT,RIGHT", 0, 16 * MAX_FRAME_SIZE
    )
    frame_skip: int = option(1, "repeat each action N times", 1, MAX_FRAME_SKIP)
    vae_model: dict[str, Any] = field(
        default_factory=lambda: {"kind": "beta-vae", "latent_dim": 32}
    )
    vae_epochs: int = option_from(TrainConfig, "epochs", 5, "the VAE's passes over its data")
    vae_batch_size: int = option_from(TrainConfig, "batch_size", 128, "the VAE's frames per step")
    agent_steps: int = option_from(CompareConfig, "total_timesteps", 30_000)
    seeds: tuple[int, ...] = option_from(CompareConfig, "seeds")
    n_envs: int | None = option_from(CompareConfig, "n_envs")
    eval_freq: int = option_from(CompareConfig, "eval_freq", 3_000)
    eval_episodes: int = option_from(CompareConfig, "eval_episodes")
    final_eval_episodes: int = option_from(
        CompareConfig, "final_eval_episodes", flag="--final-episodes"
    )
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per algorithm
    shifted_env_kwargs: dict[str, Any] | None = None
    workers: int = option_from(CompareConfig, "workers", 2)
    subprocess_envs: bool = option_from(CompareConfig, "subprocess_envs", flag="--subproc")
    algo: str = option_from(CompareConfig, "algo")
    obs_kinds: tuple[str, ...] = option_from(
        CompareConfig,
        "obs_kinds",
        ("pixel", "latent", "random", "pca", "state"),
        "comma list of arms: pixel, latent, encoder, random (untrained encoder), pca, state, "
        "latent+h (M is trained after the VAE)",
        flag="--obs",
    )
    deterministic_eval: bool = option_from(
        CompareConfig, "deterministic_eval", flag="--stochastic-eval"
    )
    backend: str = option("auto", "library that steps the env", choices=BACKENDS)
    vae_precision: str = option_from(TrainConfig, "precision", help="the VAE's training precision")
    vae_max_seconds: float | None = option_from(  # the VAE's training time budget
        TrainConfig, "max_seconds", help="the VAE's training time budget in seconds"
    )
    max_train_seconds: float | None = option_from(  # the same wall-clock budget for every agent
        CompareConfig, "max_train_seconds"
    )
    # M, for the latent+h arm: trained after the VAE on its latents (MemoryConfig defaults:
    # World Models' LSTM of 256 units and 5 Gaussians per dimension)
    memory_model: dict[str, Any] = field(default_factory=dict)
    memory_epochs: int = option_from(
        MemoryTrainConfig, "epochs", 10, "M's passes over the latent episodes"
    )
    memory_batch_size: int = option_from(
        MemoryTrainConfig, "batch_size", 32, "M's sequence chunks per step"
    )
    memory_seq_len: int = option_from(MemoryTrainConfig, "seq_len", 32, "M's steps per chunk")
    canonical_episodes: int = option(
        0, "score the best latent agent on this many of gymnasium's own tracks", 0, 100_000
    )
    canonical_max_seconds: float | None = option(  # tracks scored so far are kept
        None, "time budget of that scoring per backend, in seconds", 0.0, 1e9, low_open=True
    )
    eval_workers: int = option(2, "processes of that scoring", 1, 256)

    def __post_init__(self) -> None:
        check_ranges(self)


PRESETS: dict[str, Preset] = {
    # A minute or two: every stage runs, nothing is expected to learn. Used by the tests.
    "smoke": Preset(
        env_id="MiniGrid-Empty-5x5-v0",
        frame_size=40,
        collect_frames=1_200,
        vae_model={"kind": "beta-vae", "latent_dim": 8, "channels": [16, 32, 64]},
        vae_epochs=2,
        vae_batch_size=64,
        agent_steps=512,
        seeds=(0, 1),
        n_envs=2,
        eval_freq=256,
        eval_episodes=2,
        final_eval_episodes=3,
        overrides={"ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 2}},
        workers=1,
        obs_kinds=("pixel", "latent"),
    ),
    # The default: five arms, five seeds, on a task small enough to finish on a shared 2-core
    # machine (see README for how it was chosen and what the larger candidates cost).
    "quick": Preset(
        env_id="MiniGrid-Empty-5x5-v0",
        frame_size=40,
        collect_frames=20_000,
        vae_model={"kind": "beta-vae", "latent_dim": 16, "channels": [16, 32, 64]},
        vae_epochs=10,
        vae_batch_size=128,
        agent_steps=30_000,
        seeds=(0, 1, 2, 3, 4),
        eval_freq=2_500,
        eval_episodes=1,  # Empty's start is fixed: a deterministic policy replays one episode
        final_eval_episodes=3,
        overrides={
            "ppo": {
                "n_envs": 4,
                "n_steps": 128,
                "batch_size": 128,
                "n_epochs": 4,
                "learning_rate": 0.00025,
            }
        },
        workers=3,
    ),
    # CarRacing on 2 CPU cores within the hour: envpool frames, a correlated collection
    # policy, bf16 where the CPU has it, and the same training wall-clock for both arms; the
    # best latent driver is then scored on gymnasium's own CarRacing-v3 over 100 tracks.
    "carracing": Preset(
        env_id="CarRacing-v3",
        obs_kinds=("pixel", "latent"),
        backend="envpool",
        collect_frames=20_000,
        collect_policy="brownian",
        crop=(0, 12, 0, 0),
        frame_skip=2,
        vae_epochs=5,
        vae_batch_size=128,
        vae_max_seconds=420.0,
        agent_steps=2_000_000,
        max_train_seconds=300.0,
        seeds=(0, 1, 2, 3, 4),  # 3 seeds left the intervals overlapping; 5 separate them
        n_envs=8,
        eval_freq=10_000,
        eval_episodes=2,
        final_eval_episodes=5,
        canonical_episodes=100,
        canonical_max_seconds=900.0,
        workers=2,
    ),
    # GPU-machine scale on CarRacing: ~10k rollouts for the VAE, 1M agent steps, 5 seeds.
    "full": Preset(
        env_id="CarRacing-v3",
        collect_frames=10_000 * 1_000,
        collect_policy="brownian",
        crop=(0, 12, 0, 0),
        frame_skip=2,
        vae_epochs=10,
        vae_batch_size=1024,
        agent_steps=1_000_000,
        seeds=(0, 1, 2, 3, 4),
        eval_freq=50_000,
        eval_episodes=10,
        final_eval_episodes=50,
        shifted_env_kwargs={"domain_randomize": True},
        workers=1,
        subprocess_envs=True,
        obs_kinds=("pixel", "latent", "random", "pca"),
    ),
}


def run_pipeline(
    preset_name: str | Preset,
    out_dir: str | Path | None = None,
    env_id: str | None = None,
    command: str = "",
    progress: bool = True,
    algo: str | None = None,
    obs_kinds: tuple[str, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    backend: str | None = None,
    settings: dict[str, Any] | None = None,
    cluster: str = "local",
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
) -> Path:
    """Run every stage of ``preset_name`` (optionally on another env, algorithm, arms, seeds or
    backend, or with other ``settings`` of the preset); return ``report.md``. Impossible arms
    are refused before anything runs. Each stage's wall-clock is logged as it ends.

    ``cluster="ray"`` (or a Ray address) collects the episodes as Ray tasks
    (:mod:`envs.ray_collect`) and trains the agents as Ray tasks, each asking for
    ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (:mod:`agents.ray_runs`).
    """
    if isinstance(preset_name, Preset):
        preset, preset_name = preset_name, "custom"
    elif preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of {sorted(PRESETS)}")
    else:
        preset = PRESETS[preset_name]
    if env_id:
        preset = replace(preset, env_id=env_id)
    if backend:
        preset = replace(preset, backend=backend)
    if settings:
        unknown = sorted(set(settings) - {f.name for f in fields(Preset)})
        if unknown:
            raise ValueError(
                f"unknown preset settings {unknown}; known: {sorted(f.name for f in fields(Preset))}"
            )
        preset = replace(preset, **settings)
    if algo:
        preset = replace(preset, algo=algo)
    if obs_kinds:
        preset = replace(preset, obs_kinds=tuple(obs_kinds))
    if seeds:
        preset = replace(preset, seeds=tuple(seeds))
    # the data and the model exist later; only what can be known now is checked here
    check_arms(
        preset.obs_kinds, preset.env_id, model_dir="(trained below)", data_dir="(collected below)"
    )
    out = Path(
        out_dir or Path("runs") / "pipeline" / f"{preset_name}__{preset.env_id.replace('/', '_')}"
    )
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    opts = env_options(
        frame_size=preset.frame_size,
        crop=preset.crop,
        frame_skip=preset.frame_skip,
        max_episode_steps=preset.max_episode_steps,
        backend=preset.backend,
    )
    opts = resolve_env_options(preset.env_id, opts)
    start = time.perf_counter()

    def stage_done(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0
        logger.info(
            "stage %s: %.1f s (%.1f min since the start)",
            name,
            timings[name],
            (time.perf_counter() - start) / 60,
        )

    t = time.perf_counter()
    data = out / "data"
    on_ray = uses_ray(cluster)
    r = collect(
        data,
        preset.env_id,
        n_frames=preset.collect_frames,
        # on Ray: one episode task per CPU of the cluster at a time
        n_workers=cluster_cpus(connect_ray(cluster)) if on_ray else 2,
        policy=preset.collect_policy,
        env_options=opts,
        progress=progress,
        cluster=cluster,
    )
    stage_done("collect", t)
    print(f"[1/4] data: {r.total_episodes} episodes, {r.total_frames} frames in {data}", flush=True)

    t = time.perf_counter()
    vae = out / "vae"
    if not is_finished(vae):
        tcfg = TrainConfig(
            model=preset.vae_model,
            epochs=preset.vae_epochs,
            batch_size=preset.vae_batch_size,
            precision=preset.vae_precision,
            max_seconds=preset.vae_max_seconds,
        )
        train_autoencoder(data, vae, tcfg, resume=vae.exists(), progress=progress)
    stage_done("train_vae", t)
    print(f"[2/4] VAE: {vae / 'checkpoints' / 'best'}", flush=True)

    memory = None
    if any(ARMS[o].needs_memory for o in preset.obs_kinds):
        t = time.perf_counter()
        memory = train_memory_stage(preset, data, vae, out, progress)
        stage_done("train_rnn", t)
        print(f"[2/4] M: {memory / 'checkpoints' / 'best'}", flush=True)

    t = time.perf_counter()
    ccfg = CompareConfig(
        env_id=preset.env_id,
        model_dir=str(vae),
        algo=preset.algo,
        obs_kinds=preset.obs_kinds,
        data_dir=str(data),
        deterministic_eval=preset.deterministic_eval,
        seeds=preset.seeds,
        total_timesteps=preset.agent_steps,
        eval_freq=preset.eval_freq,
        eval_episodes=preset.eval_episodes,
        final_eval_episodes=preset.final_eval_episodes,
        vae_frames=r.total_frames,
        env_options={k: v for k, v in opts.items() if v is not None},
        overrides=preset.overrides.get(preset.algo, {}),
        n_envs=preset.n_envs,
        shifted_env_kwargs=preset.shifted_env_kwargs,
        workers=preset.workers,
        subprocess_envs=preset.subprocess_envs,
        max_train_seconds=preset.max_train_seconds,
        memory_dir=str(memory) if memory else None,
    )
    if on_ray:
        from agents.ray_runs import run_comparison_on_ray

        result = run_comparison_on_ray(
            ccfg, out / "compare", cluster, cpus_per_run, gpus_per_run, progress
        )
    else:
        result = run_comparison(ccfg, out / "compare", progress=progress)
    stage_done("compare", t)
    print(f"[3/4] agents: {out / 'compare' / 'runs'}", flush=True)

    model = load_model(vae, device="cpu")
    pictures = inspect_model(model, EpisodeDataset(data), out / "vae" / "inspect", n_frames=512)[
        "files"
    ]
    images = {k: Path(pictures[k]) for k in ("reconstructions", "traversals")}
    command = command or f"worldvae pipeline --preset {preset_name} --env {preset.env_id}"

    timings_path = out / "report" / "timings.json"
    previous = json.loads(timings_path.read_text()) if timings_path.exists() else []

    def this_run() -> dict[str, float]:
        sub = {f"compare / {k}": v for k, v in result.timings.items()}
        return {k: round(v, 1) for k, v in (timings | sub).items()}

    def report_now(sections: list[str]) -> Path:
        return write_report(
            replace(result, timings={}),
            out / "report",
            command,
            images,
            stage_times=summed_times([*previous, this_run()]),
            machine=machine_description(),
            extra_sections=sections,
            invocations=len(previous) + 1,
        )

    report = report_now([])
    if preset.canonical_episodes:  # the report above stands if this last stage is cut short
        t = time.perf_counter()
        section = canonical_score(result, preset.canonical_episodes, out / "canonical.json", preset)
        stage_done("canonical_eval", t)
        report = report_now([section])
    write_json(timings_path, [*previous, this_run()])
    print(f"[4/4] report: {report}", flush=True)
    return report


def train_memory_stage(preset: Preset, data: Path, vae: Path, out: Path, progress: bool) -> Path:
    """Encode the episodes with the VAE (``out/latents``) and train M on them (``out/rnn``).

    Both resume: finished latent episodes are kept, and M continues from its last checkpoint.
    Returns M's run directory.
    """
    from envs import make_env_from_options
    from envs.latent_memory import action_spec_for
    from worldvae.data import Manifest
    from worldvae.data.latents import encode_dataset
    from worldvae.memory.trainer import train_memory
    from worldvae.vae.io import model_sha256, resolve_model_dir

    manifest = Manifest.load(data)
    env = make_env_from_options(manifest.env_id, manifest.env_options)
    spec = action_spec_for(env.action_space)
    env.close()
    model_dir = resolve_model_dir(vae)
    latents = out / "latents"
    encode_dataset(
        data,
        load_model(model_dir),
        model_dir,
        model_sha256(model_dir),
        latents,
        spec,
        progress=progress,
    )
    rnn = out / "rnn"
    if not is_finished(rnn):
        cfg = MemoryTrainConfig(
            model=preset.memory_model,
            epochs=preset.memory_epochs,
            batch_size=preset.memory_batch_size,
            seq_len=preset.memory_seq_len,
        )
        train_memory(latents, rnn, cfg, resume=rnn.exists(), progress=progress)
    return rnn


# Published CarRacing-v3 (v0 then) scores over 100 tracks, for the report.
FIELD_MARKS = (
    "World Models 906 +- 21 (V+M+C), V only 632 +- 251, V + hidden layer 788 +- 141; "
    "rl-zoo PPO CnnPolicy 154 +- 75 after 4M steps, PPO-LSTM 863 +- 97"
)


def summed_times(invocations: list[dict[str, float]]) -> dict[str, float]:
    """Seconds per stage summed over the invocations of a resumed pipeline (a stage a later
    invocation found done adds only its check), in first-seen order."""
    total: dict[str, float] = {}
    for times in invocations:
        for stage, secs in times.items():
            total[stage] = round(total.get(stage, 0.0) + float(secs), 1)
    return total


def best_policy(runs_dir: Path, runs: list[str]) -> tuple[str, str, int]:
    """The run, policy (``"best"`` or ``"final"``) and step of the highest periodic
    evaluation among ``runs``; a run that kept no best policy offers its final one."""
    candidates = []
    for run in runs:
        info = json.loads((runs_dir / run / "config.json").read_text())
        kept = info.get("best") and (runs_dir / run / BEST_AGENT_FILE).is_file()
        if kept:
            candidates.append((info["best"]["mean_return"], run, "best", info["best"]["steps"]))
        else:
            candidates.append((info["final_mean_return"], run, "final", info["steps"]))
    _, run, which, step = max(candidates, key=lambda c: c[0])
    return run, which, int(step)


def canonical_score(result: ComparisonResult, n_episodes: int, path: Path, preset: Preset) -> str:
    """Score the best latent policy over ``n_episodes`` tracks on both backends.

    The policy is the one of the highest periodic evaluation over the latent runs (see
    :func:`best_policy`); those evaluations use the first tracks from the evaluation seed on
    the training backend, so gymnasium's tracks (other tracks for the same seeds) are
    held out from that choice.

    Gymnasium's own env is the one published scores use; envpool's tracks differ. Tracks are
    played in chunks (``preset.eval_workers`` processes each) until all are scored or
    ``preset.canonical_max_seconds`` have passed on that backend; the section says how many
    were. Scores are kept in ``path`` (JSON) and reused when the pipeline is re-run. Returns
    a Markdown section for the report.
    """
    latent = [r for r in result.runs if r["obs"] == "latent"]
    if not latent:
        return ""
    best, which, step = best_policy(result.out_dir / "runs", [r["run"] for r in latent])
    bundle = result.out_dir / "runs" / best
    seed = result.config.eval_seed
    key = {"run": best, "episodes": n_episodes, "seed": seed, "which": which, "step": step}
    done = json.loads(path.read_text()) if path.exists() else {}
    if {k: done.get(k) for k in key} != key:
        scores = {}
        chunk = max(preset.eval_workers, 1)  # one track per process between budget checks
        for backend in ("envpool", "gymnasium"):
            t = time.perf_counter()
            returns: list[float] = []
            while len(returns) < n_episodes:
                if preset.canonical_max_seconds and time.perf_counter() - t > (
                    preset.canonical_max_seconds
                ):
                    break
                n = min(chunk, n_episodes - len(returns))
                r = evaluate_bundle(
                    bundle,
                    n,
                    seed + len(returns),
                    device="cpu",
                    backend=backend,
                    workers=preset.eval_workers,
                    which=which,
                )
                returns += r.returns.tolist()
            scores[backend] = {
                "mean": float(np.mean(returns)),
                "std": float(np.std(returns)),
                "returns": returns,
                "seconds": round(time.perf_counter() - t, 1),
            }
            logger.info(
                "%s on %s: %.1f +- %.1f over %d tracks",
                best,
                backend,
                scores[backend]["mean"],
                scores[backend]["std"],
                len(returns),
            )
        done = key | {"scores": scores}
        write_json(path, done)
    sc = done["scores"]
    policy = (
        f"the policy of its best evaluation during training (step {step:,})"
        if which == "best"
        else "its final policy"
    )
    rows = []
    for name, v in (
        ("gymnasium CarRacing-v3 (the published scores' env)", sc["gymnasium"]),
        ("envpool CarRacing-v3 (trained on)", sc["envpool"]),
    ):
        r = v["returns"]
        rows.append(
            f"| {name} | {len(r)} | {v['mean']:.1f} +- {v['std']:.1f} | {min(r):.1f} | "
            f"{max(r):.1f} | {v['seconds'] / 60:.1f} min |"
        )
    return "\n".join(
        [
            f"## The best latent agent on up to {n_episodes} tracks",
            "",
            f"`{best}`, {policy} (deterministic, track seeds from {seed}; fewer tracks than "
            "asked means the stage's time budget ran out):",
            "",
            "| env | tracks | mean return +- std | min | max | time |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"For reference, over 100 tracks: {FIELD_MARKS}; solved is 900.",
        ]
    )
