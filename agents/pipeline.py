"""The main job: collect -> train VAE (and M) -> compare pixel and latent agents -> report.

Every stage resumes: the collector skips finished episodes, the VAE run continues from its
last checkpoint (or is skipped when finished), finished agents are skipped, and the report is
rebuilt from the results. The settings of every stage are a :class:`~agents.presets.Preset`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agents.arms import ARMS, check_arms
from agents.canonical import best_of_arm, canonical_score
from agents.collection import AgentPolicySpec
from agents.comparison import ComparisonResult, best_policy
from agents.controller.kinds import CONTROLLER_KINDS
from agents.preflight import check_arms_fit
from agents.presets import PRESETS, Preset, build_preset, default_out
from agents.ray_runs import run_comparison_on_cluster
from agents.report import write_report
from agents.world_models import score_world_models, train_controllers
from envs import collect
from envs.cluster import cluster_cpus, connect_ray, uses_ray
from envs.collector import CollectResult
from envs.factory import resolve_spec
from envs.policies import PolicySpec
from worldvae.atomic import write_json
from worldvae.data import EpisodeDataset
from worldvae.data.manifest import MANIFEST_NAME
from worldvae.diagnostics import inspect_model
from worldvae.envspec import EnvSpec
from worldvae.vae import load_model
from worldvae.vae.trainer import is_finished, train_autoencoder
from worldvae.versions import machine_description

logger = logging.getLogger(__name__)

__all__ = [
    "PIPELINE_ENTRIES",
    "PRESETS",
    "Preset",
    "best_policy",
    "canonical_score",
    "run_pipeline",
]

# Everything the pipeline writes in its folder, one name per stage's output: a folder holding
# only these is the pipeline's own and may be resumed (anything else is refused).
PIPELINE_ENTRIES = (
    "data",
    "vae",
    "latents",
    "rnn",
    "compare",
    "data2",
    "data12",
    "latents12",
    "rnn12",
    "dream_memory",
    "controllers",
    "world_models",
    "canonical.json",
    "report",
)


@dataclass
class PipelineRun:
    """One invocation of the pipeline: what its stages share, and each stage's wall-clock."""

    preset: Preset
    name: str
    out: Path
    env: EnvSpec  # the preset's, its backend resolved
    progress: bool = True
    cluster: str = "local"
    cpus_per_run: float = 1
    gpus_per_run: float = 0
    timings: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    def path(self, name: str) -> Path:
        """``out/name`` for one of :data:`PIPELINE_ENTRIES` (any other name is a defect: a
        re-run would refuse the folder as not the pipeline's)."""
        if name not in PIPELINE_ENTRIES:
            raise ValueError(f"{name!r} is not one of the pipeline's entries {PIPELINE_ENTRIES}")
        return self.out / name

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as the stage ``name``; log it when it ends."""
        t = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t
        logger.info(
            "stage %s: %.1f s (%.1f min since the start)",
            name,
            self.timings[name],
            (time.perf_counter() - self.start) / 60,
        )


def run_pipeline(
    preset: str | Preset,
    out_dir: str | Path | None = None,
    *,
    settings: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
    name: str | None = None,
    command: str = "",
    progress: bool = True,
    cluster: str = "local",
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
) -> Path:
    """Run every stage of ``preset`` (a name in :data:`~agents.presets.PRESETS`, or a
    :class:`~agents.presets.Preset`, named ``name`` in the report and the default ``out_dir``)
    with ``settings`` applied (:func:`~agents.presets.build_preset`: dotted keys such as
    ``vae.epochs``); return ``report.md``. Bad settings and impossible arms are refused before
    anything is written. Each stage's wall-clock is logged as it ends.

    ``cluster="ray"`` (or a Ray address) collects the episodes as Ray tasks
    (:mod:`envs.ray_collect`, one per CPU of the cluster at a time) and trains the agents as
    Ray tasks, each asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs
    (:mod:`agents.ray_runs`).
    """
    name = name or (preset if isinstance(preset, str) else "custom")
    chosen = build_preset(preset, settings)
    env = resolve_spec(chosen.env)
    check_before_collecting(chosen, env)
    out = Path(out_dir or default_out(name, chosen))
    out.mkdir(parents=True, exist_ok=True)
    run = PipelineRun(chosen, name, out, env, progress, cluster, cpus_per_run, gpus_per_run)
    collected = collect_stage(run)
    data = run.path("data")
    vae = train_vae_stage(run, data)
    memory = None
    if chosen.controllers.kinds or any(ARMS[o].needs_memory for o in chosen.compare.obs_kinds):
        memory = train_memory_stage(run, data, vae)
    result = compare_stage(run, data, vae, memory, collected.total_frames)
    controllers = {}
    if memory and chosen.controllers.kinds:
        c_memory = memory  # the PPO drivers keep the first M; the Cs may get a second round's
        c_latents = run.path("latents")
        if chosen.controllers.second_round_frames:
            c_memory = second_round_stage(run, data, vae, result)
            c_latents = run.path("latents12")
        members = dream_members_stage(run, c_latents)
        controllers = controllers_stage(run, vae, c_memory, members)
    reporter = Reporter(run, data, vae, result, command, memory)
    report = reporter.write()
    if chosen.canonical.episodes:  # the report above stands if this last stage is cut short
        report = reporter.write([canonical_stage(run, result, controllers)])
    reporter.save_timings()
    print(f"[4/4] report: {report}", flush=True)
    return report


# What a second round of data needs: a [z, h] driver to collect it.
SECOND_ROUND_NEEDS = (
    "controllers.second_round_frames: the second round is driven by the best latent+h PPO "
    "policy; add latent+h to compare.obs_kinds, or set controllers.second_round_frames=0"
)
# How the pipeline gets frames large enough for the pixel arm's CNN.
PIPELINE_FRAMES_FIX = (
    "set --frame-size 36 or more (env.frame_size), or leave pixel out of --obs (compare.obs_kinds)"
)


def check_before_collecting(preset: Preset, env: EnvSpec) -> None:
    """What can be checked before the data and the models exist: the collection policy, the
    arms against the env, the agents' algorithm against its actions, their hyperparameters (``compare.overrides``
    and ``compare.hyperparams_file`` included), the pixel arm's frame size and the shifted
    env.

    Raises:
        ValueError: one line naming the setting and the fix.
    """
    if isinstance(preset.collect.policy, str):
        try:
            PolicySpec.parse(preset.collect.policy)
        except ValueError as e:
            problem = str(e)
            if preset.collect.policy.startswith(("agent:", "best-agent:")):
                problem = (
                    "the pipeline collects with random, brownian or sb3:ALGO:PATH; collect a "
                    "round of data with a trained agent by `worldvae collect --policy agent:RUN`"
                )
            raise ValueError(f"collect.policy: {problem}") from None
    second = preset.controllers.second_round_frames and preset.controllers.kinds
    if second and "latent+h" not in preset.compare.obs_kinds:
        raise ValueError(SECOND_ROUND_NEEDS)
    stage = preset.compare
    check_arms(
        stage.obs_kinds, env.env_id, model_dir="(trained below)", data_dir="(collected below)"
    )
    cfg = stage.config(
        env_id=env.env_id,
        model_dir=None,
        data_dir=None,
        vae_frames=0,
        env_given=env.options(),
        memory_dir=None,
    )
    check_arms_fit(
        cfg.agent_config("pixel", cfg.seeds[0]),
        cfg.obs_kinds,
        cfg.shifted_env_kwargs,
        PIPELINE_FRAMES_FIX,
        where="compare.overrides (applied over agents/hyperparams)",
    )


def collect_stage(run: PipelineRun) -> CollectResult:
    """Collect the VAE's episodes into ``out/data`` (as Ray tasks on a Ray cluster)."""
    data = run.path("data")
    with run.stage("collect"):
        r = collect_round(run, data)
    print(f"[1/4] data: {r.total_episodes} episodes, {r.total_frames} frames in {data}", flush=True)
    return r


def collect_round(run: PipelineRun, out: Path, **changes: Any) -> CollectResult:
    """Collect into ``out`` with the preset's collection settings and ``changes`` to them (as
    Ray tasks on a Ray cluster: one episode task per CPU of the cluster at a time)."""
    settings = asdict(run.preset.collect) | changes
    if uses_ray(run.cluster):
        settings["n_workers"] = cluster_cpus(connect_ray(run.cluster))
    return collect(out, run.env, **settings, progress=run.progress, cluster=run.cluster)


def train_vae_stage(run: PipelineRun, data: Path) -> Path:
    """Train V on ``data`` into ``out/vae`` (continued, or skipped when finished)."""
    vae = run.path("vae")
    with run.stage("train_vae"):
        if not is_finished(vae):
            train_autoencoder(data, vae, run.preset.vae, resume=vae.exists(), progress=run.progress)
    print(f"[2/4] VAE: {vae / 'checkpoints' / 'best'}", flush=True)
    return vae


def train_memory_stage(run: PipelineRun, data: Path, vae: Path) -> Path:
    """Encode the episodes with the VAE (``out/latents``) and train M on them (``out/rnn``).

    Both resume: finished latent episodes are kept, and M continues from its last checkpoint.
    Returns M's run directory.
    """
    rnn = run.path("rnn")
    with run.stage("train_rnn"):
        encode_and_train_memory(run, data, vae, run.path("latents"), rnn)
    print(f"[2/4] M: {rnn / 'checkpoints' / 'best'}", flush=True)
    return rnn


def encode_and_train_memory(
    run: PipelineRun, data: Path, vae: Path, latents: Path, rnn: Path
) -> None:
    """Encode ``data`` with V into ``latents`` (finished episodes kept) and train M on them
    into ``rnn`` with the preset's M settings (continued from its last checkpoint, or skipped
    when finished)."""
    from envs.latent_memory import encode_latent_dataset
    from worldvae.memory.trainer import train_memory

    encode_latent_dataset(data, vae, latents, progress=run.progress)
    if not is_finished(rnn):
        train_memory(latents, rnn, run.preset.memory, resume=rnn.exists(), progress=run.progress)


def compare_stage(
    run: PipelineRun, data: Path, vae: Path, memory: Path | None, vae_frames: int
) -> ComparisonResult:
    """Train and compare the arms into ``out/compare`` (locally, or as Ray tasks)."""
    cfg = run.preset.compare.config(
        env_id=run.env.env_id,
        model_dir=str(vae),
        data_dir=str(data),
        vae_frames=vae_frames,
        env_given=run.env.options(),
        memory_dir=str(memory) if memory else None,
    )
    with run.stage("compare"):
        result = run_comparison_on_cluster(
            cfg, run.path("compare"), run.cluster, run.cpus_per_run, run.gpus_per_run, run.progress
        )
    print(f"[3/4] agents: {run.path('compare') / 'runs'}", flush=True)
    return result


def second_round_stage(run: PipelineRun, data: Path, vae: Path, result: ComparisonResult) -> Path:
    """World Models' second round of data: ``controllers.second_round_frames`` frames driven by
    the comparison's best ``[z, h]`` PPO policy with sampled actions (``out/data2``, collection
    seed + 1: other tracks than the first round's), merged with the first round
    (``out/data12``), encoded by the same V (``out/latents12``), and M trained on both
    (``out/rnn12``) with M's settings. Each step resumes or is skipped when done. Returns the
    new M's run directory."""
    from worldvae.data.writer import merge_datasets

    chosen = best_of_arm(result, "latent+h")
    if chosen is None:  # check_before_collecting refuses such a preset
        raise ValueError(SECOND_ROUND_NEEDS)
    data2, data12, rnn = run.path("data2"), run.path("data12"), run.path("rnn12")
    with run.stage("second_round"):
        r = collect_round(
            run,
            data2,
            n_frames=run.preset.controllers.second_round_frames,
            n_episodes=None,
            policy=AgentPolicySpec(str(chosen.bundle.resolve()), chosen.which),
            seed=run.preset.collect.seed + 1,
        )
        if not (data12 / MANIFEST_NAME).is_file():
            merge_datasets([data, data2], data12)
        check_merged(data12, data, data2)
        encode_and_train_memory(run, data12, vae, run.path("latents12"), rnn)
    print(
        f"[3/4] second round: {r.total_episodes} episodes, {r.total_frames} frames driven by "
        f"{chosen.bundle.name}; M on both rounds: {rnn / 'checkpoints' / 'best'}",
        flush=True,
    )
    return rnn


def check_merged(merged: Path, *sources: Path) -> None:
    """Refuse a merged dataset that no longer holds every episode of its sources (a source
    grew after the merge, and M was trained on the smaller one).

    Raises:
        ValueError: naming the counts and the folders to remove.
    """
    have = len(EpisodeDataset(merged).episodes)
    want = sum(len(EpisodeDataset(s).episodes) for s in sources)
    if have != want:
        raise ValueError(
            f"{merged} holds {have} episodes, its sources {want} (the second round grew after "
            f"it was merged); remove {merged.name}, latents12 and rnn12 from {merged.parent} "
            "to merge and train M again, or set controllers.second_round_frames back"
        )


def dream_members_stage(run: PipelineRun, latents: Path) -> list[Path]:
    """The other Ms of the dream-trained Cs' dream (``controllers.dream_members``): each
    trained on ``latents`` (those the Cs' M was trained on) with M's settings and seed M's +
    k into ``out/dream_memory/k`` (continued, or skipped when finished). None without a
    dream-trained C."""
    stage = run.preset.controllers
    if not stage.dream_members or not any(CONTROLLER_KINDS[k].dream for k in stage.kinds):
        return []
    from worldvae.memory.trainer import train_memory

    members = []
    with run.stage("dream_memory"):
        for k in range(1, stage.dream_members + 1):
            rnn = run.path("dream_memory") / str(k)
            check_member_latents(rnn, latents)
            if not is_finished(rnn):
                cfg = replace(run.preset.memory, seed=run.preset.memory.seed + k)
                train_memory(latents, rnn, cfg, resume=rnn.exists(), progress=run.progress)
            members.append(rnn)
    print(f"[3/4] the dream's other Ms: {run.path('dream_memory')} ({len(members)})", flush=True)
    return members


def check_member_latents(rnn: Path, latents: Path) -> None:
    """Refuse a dream member at ``rnn`` (finished or not) trained on other latents than
    ``latents`` (a second round turned on or off after it was trained).

    Raises:
        ValueError: naming both and the fix.
    """
    config = rnn / "config.json"
    if not config.is_file():
        return
    trained_on = json.loads(config.read_text()).get("data", {}).get("root")
    if trained_on and Path(trained_on).resolve() != latents.resolve():
        raise ValueError(
            f"the dream's M {rnn} was trained on {trained_on}, the controllers' M on {latents}; "
            f"remove {rnn.parent} to train the dream's Ms again, or set back "
            "controllers.second_round_frames"
        )


def controllers_stage(
    run: PipelineRun, vae: Path, memory: Path, dream_members: list[Path]
) -> dict[str, Path]:
    """Train World Models' controllers on ``[z, h]`` into ``out/controllers`` (CMA-ES on the
    pipeline's Ray cluster when it has one; the dream-trained ones with the other Ms of
    ``dream_members``); return kind -> bundle."""
    with run.stage("controllers"):
        bundles = train_controllers(
            run.preset.controllers,
            run.env,
            vae,
            memory,
            run.path("controllers"),
            run.cluster,
            run.progress,
            dream_members,
        )
    print(f"[3/4] controllers: {run.path('controllers')}", flush=True)
    return bundles


def canonical_stage(
    run: PipelineRun, result: ComparisonResult, controllers: dict[str, Path]
) -> str:
    """Score on the canonical tracks: the best latent agent (``out/canonical.json``), or with
    World Models' controllers every driver (``out/world_models``); return the report's
    section."""
    with run.stage("canonical_eval"):
        if controllers:
            return score_world_models(
                result, controllers, run.path("world_models"), run.preset.canonical
            )
        return canonical_score(result, run.path("canonical.json"), run.preset.canonical)


class Reporter:
    """The report of one invocation (``out/report``), written again as sections are added;
    the stage times summed with the earlier invocations' (``report/timings.json``). It embeds
    a GIF of the best agent playing, and M's dream beside the real frames when M (``memory``,
    its run directory) was trained."""

    def __init__(
        self,
        run: PipelineRun,
        data: Path,
        vae: Path,
        result: ComparisonResult,
        command: str,
        memory: Path | None = None,
    ):
        self.run, self.result = run, result
        self.dream_gif = memory / "images" / "dream.gif" if memory else None
        model = load_model(vae, device="cpu")
        pictures = inspect_model(model, EpisodeDataset(data), vae / "inspect", n_frames=512)
        self.images = {k: Path(pictures["files"][k]) for k in ("reconstructions", "traversals")}
        self.command = command or (
            f"worldvae pipeline --preset {run.name} --env {run.preset.env.env_id}"
        )
        self.timings_path = run.path("report") / "timings.json"
        exists = self.timings_path.exists()
        self.previous = json.loads(self.timings_path.read_text()) if exists else []

    def this_run(self) -> dict[str, float]:
        """This invocation's seconds per stage, the comparison's own stages included."""
        sub = {f"compare / {k}": v for k, v in self.result.timings.items()}
        return {k: round(v, 1) for k, v in (self.run.timings | sub).items()}

    def write(self, sections: list[str] | None = None) -> Path:
        """Write the report with ``sections`` appended; return ``report.md``."""
        return write_report(
            replace(self.result, timings={}),
            self.run.path("report"),
            self.command,
            self.images,
            stage_times=summed_times([*self.previous, self.this_run()]),
            machine=machine_description(),
            extra_sections=sections or [],
            invocations=len(self.previous) + 1,
            video=True,
            dream_gif=self.dream_gif,
        )

    def save_timings(self) -> None:
        write_json(self.timings_path, [*self.previous, self.this_run()])


def summed_times(invocations: list[dict[str, float]]) -> dict[str, float]:
    """Seconds per stage summed over the invocations of a resumed pipeline (a stage a later
    invocation found done adds only its check), in first-seen order."""
    total: dict[str, float] = {}
    for times in invocations:
        for stage, secs in times.items():
            total[stage] = round(total.get(stage, 0.0) + float(secs), 1)
    return total
