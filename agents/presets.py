"""The pipeline's presets: every stage's settings, each held in that stage's own config.

A :class:`Preset` is an env spec, a collection (:class:`~envs.collector.CollectConfig`), V's
training (:class:`~worldvae.vae.trainer.TrainConfig`, its ``model`` the architecture), M's
(:class:`~worldvae.memory.trainer.MemoryTrainConfig`), the agents' comparison
(:class:`CompareStage`) and the scoring of the best latent agent (:class:`CanonicalStage`).

:func:`build_preset` changes a preset by dotted keys (``vae.epochs``, ``env.frame_size``,
``vae.model.latent_dim``); every value is checked (the name, its type, its range) while the
preset is built, before any stage runs. A dictionary setting is merged into the preset's
dictionary (JSON merge patch, RFC 7386: objects merge key by key, ``null`` removes a key).
:data:`FLAT_SETTINGS` maps each of the pipeline's flags, and the flat names the settings had
before they were grouped by stage, to its dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from agents.comparison import CompareConfig
from agents.controller.kinds import CONTROLLER_KINDS
from envs.backends import BACKENDS
from envs.collector import CollectConfig
from worldvae.config_fields import check_ranges, option, option_from, range_error
from worldvae.envspec import EnvSpec, as_frame_size
from worldvae.memory.config import MemoryConfig
from worldvae.memory.trainer import MemoryTrainConfig
from worldvae.vae.config import AutoencoderConfig
from worldvae.vae.trainer import TrainConfig

# The fields of CompareConfig the pipeline fills when it runs (from the env, the data and the
# models it made); the others are the preset's (CompareStage).
RUN_TIME_FIELDS = ("env_id", "model_dir", "data_dir", "vae_frames", "env_given", "memory_dir")


def check_types(obj: Any, where: str) -> None:
    """Raise ValueError for the first field of the dataclass ``obj`` whose value is not of its
    declared type, naming it ``where.field``."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        check_value(getattr(obj, f.name), hints[f.name], f"{where}.{f.name}")


def check_mapping(d: Mapping[str, Any], cls: type, where: str, skip: Iterable[str] = ()) -> None:
    """Raise ValueError unless every key of ``d`` is a field of the dataclass ``cls`` (but
    ``skip``) holding a value of the field's type within its range."""
    known = [f.name for f in fields(cls) if f.name not in set(skip)]
    hints = typing.get_type_hints(cls)
    meta = {f.name: f.metadata for f in fields(cls)}
    for k, v in d.items():
        if k not in known:
            dotted = [f"{where}.{name}" for name in known]
            raise ValueError(_unknown(f"{where}.{k}", f"{where} key", known, dotted))
        check_value(v, hints[k], f"{where}.{k}")
        problem = range_error(f"{where}.{k}", v, dict(meta[k])) if "help" in meta[k] else None
        if problem:
            raise ValueError(problem)


def check_value(value: Any, annotation: Any, key: str) -> None:
    """Raise ValueError unless ``value`` is of the type ``annotation`` (a list may stand for a
    tuple, an int for a float)."""
    if not _fits(value, annotation):
        raise ValueError(f"{key} must be {_describe(annotation)}, got {json_text(value)}")


def json_text(value: Any) -> str:
    """``value`` as JSON where it can be, else its repr."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _arms(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _is_mapping(annotation: Any) -> bool:
    return any(
        isinstance(o, type) and issubclass(o, Mapping)
        for o in (typing.get_origin(a) or a for a in _arms(annotation))
    )


def _fits(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    if len(arms := _arms(annotation)) > 1:
        return any(_fits(value, a) for a in arms)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation in (int, float, bool, str):
        if isinstance(value, bool):
            return annotation is bool
        if annotation is float:
            return isinstance(value, (int, float))
        return isinstance(value, annotation)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(
            _fits(v, a) for v, a in zip(value, args, strict=True)
        )
    if _is_mapping(annotation):
        if not isinstance(value, Mapping):
            return False
        kinds = args or (str, Any)
        return all(isinstance(k, str) and _fits(v, kinds[1]) for k, v in value.items())
    return not isinstance(annotation, type) or isinstance(value, annotation)


NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    type(None): "null",
}


def _describe(annotation: Any) -> str:
    if len(arms := _arms(annotation)) > 1:
        return " or ".join(_describe(a) for a in arms)
    if annotation in NAMES:
        return NAMES[annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list (each {_describe(args[0])})"
        return f"a list of {len(args)} values"
    if _is_mapping(annotation):
        inner = args[1] if len(args) == 2 else Any
        return "an object" if inner is Any else f"an object (each value {_describe(inner)})"
    return getattr(annotation, "__name__", str(annotation))


@dataclass(frozen=True)
class CompareStage:
    """The agents' comparison: the fields of :class:`~agents.comparison.CompareConfig` but
    those of :data:`RUN_TIME_FIELDS`, with their ranges and help, and ``overrides`` per
    algorithm (``{"ppo": {...}}``), so that a preset run with another ``algo`` gets that
    algorithm's overrides, or none."""

    algo: str = option_from(CompareConfig, "algo")
    obs_kinds: tuple[str, ...] = option_from(
        CompareConfig,
        "obs_kinds",
        ("pixel", "latent", "random", "pca", "state"),
        "comma list of arms: pixel, latent, encoder, random (untrained encoder), pca, state, "
        "latent+h (M is trained after the VAE)",
    )
    seeds: tuple[int, ...] = option_from(CompareConfig, "seeds")
    total_timesteps: int = option_from(CompareConfig, "total_timesteps", 30_000)
    eval_freq: int = option_from(CompareConfig, "eval_freq", 3_000)
    eval_episodes: int = option_from(CompareConfig, "eval_episodes")
    final_eval_episodes: int = option_from(CompareConfig, "final_eval_episodes")
    eval_seed: int = option_from(CompareConfig, "eval_seed")
    threshold: float | None = option_from(CompareConfig, "threshold")
    shifted_env_kwargs: dict[str, Any] | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per algorithm
    n_envs: int | None = option_from(CompareConfig, "n_envs")
    hyperparams_file: str | None = option_from(CompareConfig, "hyperparams_file")
    workers: int = option_from(CompareConfig, "workers", 2)
    subprocess_envs: bool = option_from(CompareConfig, "subprocess_envs")
    deterministic_eval: bool = option_from(CompareConfig, "deterministic_eval")
    probe: bool = option_from(CompareConfig, "probe")
    max_train_seconds: float | None = option_from(CompareConfig, "max_train_seconds")
    runtime: str = option_from(CompareConfig, "runtime")

    def __post_init__(self) -> None:
        check_ranges(self)

    def config(
        self,
        env_id: str,
        model_dir: str | None,
        data_dir: str | None,
        vae_frames: int,
        env_given: dict[str, Any],
        memory_dir: str | None,
    ) -> CompareConfig:
        """The comparison, with the fields filled at run time (``model_dir`` and
        ``data_dir`` None before V and its data exist)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["overrides"] = self.overrides.get(self.algo, {})
        return CompareConfig(
            env_id=env_id,
            model_dir=model_dir,
            data_dir=data_dir,
            vae_frames=vae_frames,
            env_given=env_given,
            memory_dir=memory_dir,
            **values,
        )


@dataclass(frozen=True)
class CanonicalStage:
    """The scoring of the best latent agent on gymnasium's own tracks (and envpool's), after
    the report; ``episodes = 0`` leaves it out."""

    episodes: int = option(
        0, "score the best latent agent on this many of gymnasium's own tracks", 0, 100_000
    )
    max_seconds: float | None = option(  # tracks scored so far are kept
        None, "time budget of that scoring per backend, in seconds", 0.0, 1e9, low_open=True
    )
    workers: int = option(2, "processes of that scoring", 1, 256)
    seed: int = option(  # agents are chosen on other tracks (compare.eval_seed)
        10_000, "seed of the first scored track (gymnasium's own: 10000 on)", 0, 2**32 - 1
    )
    backends: tuple[str, ...] = option(
        ("envpool", "gymnasium"),
        "the envs the tracks are played on",
        choices=("envpool", "gymnasium"),
    )
    sampled: bool = option(  # gSDE's noise resampled as in training
        False, "World Models' recipe: also score each PPO driver with sampled actions"
    )
    choose_on: int = option(  # never the canonical tracks, nor those the checkpoint was chosen on
        0,
        "with sampled: play each PPO driver both ways on this many tracks of its training env "
        "(from its evaluation seed + 1000) and score only the better way (0 scores both)",
        0,
        100_000,
    )

    def __post_init__(self) -> None:
        check_ranges(self)
        if not self.backends:
            raise ValueError("canonical.backends must name at least one of envpool, gymnasium")
        if self.choose_on and not self.sampled:
            raise ValueError(
                "canonical.choose_on chooses between the mode and sampled actions: set "
                "canonical.sampled=true with it, or canonical.choose_on=0"
            )


@dataclass(frozen=True)
class ControllerStage:
    """World Models' C, trained on ``[z, h]`` after M by each method of ``kinds``
    (:data:`~agents.controller.kinds.CONTROLLER_KINDS`), each on the same wall-clock budget,
    chosen on the tracks from ``eval_seed`` and scored with the canonical stage's tracks.
    CMA-ES scores its candidates in ``workers`` local processes, or on the pipeline's Ray
    cluster (``--cluster``); in M's dream (``dream_popsize`` candidates x ``dream_rollouts``)
    it steps every rollout of a generation together in this process instead (at most
    ``dream_batch_envs`` dreams per M step), unless on a Ray cluster. Empty ``kinds`` (the
    default) leaves the stage out.

    With ``second_round_frames`` the controllers use an M retrained on World Models' two
    rounds of data: the first (the collection stage's), and as many frames more driven by the
    comparison's best ``[z, h]`` PPO policy with sampled actions on other tracks (collection
    seed + 1), merged; V stays the first round's, so every PPO driver keeps its M.

    With ``dream_members`` the dream-trained Cs dream with an ensemble: M and as many more
    trained on the same latents with other seeds, the rewards less ``dream_penalty`` times
    the members' disagreement (:class:`envs.dream_env.DreamVecEnv`).

    Each CMA-ES C is kept as the best of its ``shortlist`` best choosing evaluations played
    again on ``shortlist_episodes`` other tracks (from ``eval_seed + 1000``), all in one
    batched real VecEnv (in rounds of at most its batch_envs) once its training ends."""

    kinds: tuple[str, ...] = option(
        (),
        "controllers trained on [z, h] after M: " + ", ".join(CONTROLLER_KINDS),
        choices=tuple(CONTROLLER_KINDS),
    )
    max_train_seconds: float | None = option(
        600.0,
        "training wall-clock of each controller, evaluation excluded",
        0.0,
        1e9,
        low_open=True,
    )
    total_timesteps: int = option(
        10**9, "real env steps of each controller trained in the real env", 1, 10**12
    )
    popsize: int = option(16, "CMA-ES candidates per generation", 2, 100_000)
    rollouts: int = option(2, "CMA-ES episodes per candidate", 1, 100_000)
    sigma0: float = option(0.1, "CMA-ES initial step size", 0.0, 1e3, low_open=True)
    hidden: int = option(16, "units of the hidden layer of cmaes-hidden", 1, 100_000)
    dream_popsize: int | None = option(  # a batched dream is cheap: World Models' 64
        None, "CMA-ES candidates per generation in the dream (default: popsize)", 2, 100_000
    )
    dream_rollouts: int | None = option(  # World Models: 16
        None, "CMA-ES dreams per candidate (default: rollouts)", 1, 100_000
    )
    dream_timesteps: int = option(  # the real return peaked at 256k and 2.2M dream steps
        4_000_000,
        "dream steps of each dream-trained C, CMA-ES or PPO (its wall-clock budget still applies)",
        1,
        10**12,
    )
    dream_eval_freq: int = option(
        128_000, "dream steps between a dream-trained C's choosing evaluations", 1, 10**11
    )
    dream_batch_envs: int = option(  # agents.controller.cmaes.BatchedScorer
        1024,
        "the most dreams stepped together when CMA-ES scores in M's dream on this machine "
        "(one batched M step for all of a generation's rollouts; with --cluster its Ray "
        "actors score instead)",
        1,
        1_000_000,
    )
    workers: int = option(2, "CMA-ES scoring processes (in the real env, or on a cluster)", 1, 1024)
    eval_freq: int = option(
        20_000, "real env steps between the real-env controllers' choosing evaluations", 1, 10**11
    )
    eval_episodes: int = option(4, "tracks per choosing evaluation", 1, 100_000)
    eval_seed: int = option(  # other tracks than the canonical ones
        20_000, "seed of the first choosing track", 0, 2**32 - 1
    )
    shortlist: int = option(  # agents.controller.cmaes.CMAESConfig.shortlist
        4,
        "after training, the CMA-ES controllers' best choosing evaluations re-scored on "
        "shortlist_episodes other tracks (from eval_seed + 1000) to keep the best (0: the best "
        "choosing evaluation's)",
        0,
        10_000,
    )
    shortlist_episodes: int = option(20, "tracks the shortlist is re-scored on", 1, 100_000)
    temperature: float | None = option(
        None, "the dream's tau (default: M's)", 0.0, 100.0, low_open=True
    )
    seed: int = option(0, "seed of every controller", 0, 2**32 - 1)
    second_round_frames: int = option(  # World Models' rounds of data
        0,
        "frames of a second round, driven by the best [z, h] PPO policy (sampled actions), "
        "merged with the first to retrain M for the controllers (0: the first M)",
        0,
        10**11,
    )
    dream_members: int = option(  # envs.dream_env.DreamVecEnv(ensemble=...)
        0,
        "more Ms dreaming beside M for the dream-trained Cs, trained on M's latents with M's "
        "settings and seeds M's + 1, + 2, ...: each env's next latent from one drawn every "
        "step, rewards and ends their mean (0: M alone)",
        0,
        64,
    )
    dream_penalty: float = option(  # DreamVecEnv(disagreement_penalty=...)
        0.0,
        "the dream's reward less this times its Ms' disagreement about the next latent "
        "(needs dream_members; scripts/m_disagreement.py gives its scale on real episodes)",
        0.0,
        1e6,
    )

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.dream_members and not any(CONTROLLER_KINDS[k].dream for k in self.kinds):
            raise ValueError(
                "controllers.dream_members trains more Ms for a dream-trained C: add one to "
                "controllers.kinds (e.g. dream-cmaes) or set dream_members back to 0"
            )
        dream_cmaes = any(
            CONTROLLER_KINDS[k].dream and CONTROLLER_KINDS[k].algo == "cmaes" for k in self.kinds
        )
        for name in ("dream_popsize", "dream_rollouts"):
            if getattr(self, name) is not None and not dream_cmaes:
                raise ValueError(
                    f"controllers.{name} sets the CMA-ES of a dream-trained C: add dream-cmaes "
                    f"to controllers.kinds or leave {name} unset"
                )
        if self.dream_penalty and not self.dream_members:
            raise ValueError(
                "controllers.dream_penalty weighs the disagreement of the dream's Ms: set "
                "controllers.dream_members too (e.g. 2)"
            )


# What a preset's stages are unless it says otherwise. The collection's workers are local
# processes; on a Ray cluster the pipeline runs one episode task per CPU of the cluster.
COLLECT = CollectConfig(n_frames=20_000, n_workers=2)
VAE = TrainConfig(model={"kind": "beta-vae", "latent_dim": 32}, epochs=5)
# M, for the latent+h arm: trained after the VAE on its latents (MemoryConfig's defaults:
# World Models' LSTM of 256 units and 5 Gaussians per dimension)
MEMORY = MemoryTrainConfig(epochs=10)

# The keys of a model dictionary the data decides (not settings).
DATA_DECIDED = {"vae": ("frame_shape",), "memory": ("latent_dim", "action_dim")}
MODEL_CONFIGS: dict[str, Any] = {"vae": AutoencoderConfig, "memory": MemoryConfig}


@dataclass(frozen=True)
class Preset:
    """Every stage's settings: the env, the collection, V's training (``vae.model``: V's
    architecture, :class:`~worldvae.vae.config.AutoencoderConfig`'s fields but the frame
    shape), M's (``memory.model``: :class:`~worldvae.memory.config.MemoryConfig`'s fields but
    the sizes the latents decide; M trains only for the latent+h arm), the agents'
    comparison, the canonical scoring and World Models' controllers (C on ``[z, h]``, after M).

    Built, it is checked whole: every field's type (the stage configs check their ranges) and
    the model dictionaries against their model configs.
    """

    env: EnvSpec
    collect: CollectConfig = COLLECT
    vae: TrainConfig = VAE
    memory: MemoryTrainConfig = MEMORY
    compare: CompareStage = field(default_factory=CompareStage)
    canonical: CanonicalStage = field(default_factory=CanonicalStage)
    controllers: ControllerStage = field(default_factory=ControllerStage)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(Preset)
        for f in fields(self):
            section = getattr(self, f.name)
            if not isinstance(section, hints[f.name]):
                raise ValueError(
                    f"preset section {f.name} must be a {hints[f.name].__name__}, got {section!r}"
                )
            check_types(section, f.name)
        for name, cls in MODEL_CONFIGS.items():
            model = getattr(self, name).model
            check_mapping(model, cls, f"{name}.model", skip=DATA_DECIDED[name])
            decided = {"frame_shape": self.env.frame_shape, "latent_dim": 1, "action_dim": 1}
            try:
                cls.from_dict({**model, **{k: decided[k] for k in DATA_DECIDED[name]}})
            except (ValueError, TypeError) as e:
                raise ValueError(f"{name}.model: {e}") from None


PRESETS: dict[str, Preset] = {
    # A minute or two: every stage runs, nothing is expected to learn. Used by the tests.
    "smoke": Preset(
        env=EnvSpec("MiniGrid-Empty-5x5-v0", frame_size=(40, 40)),
        collect=replace(COLLECT, n_frames=1_200),
        vae=replace(
            VAE,
            model={"kind": "beta-vae", "latent_dim": 8, "channels": [16, 32, 64]},
            epochs=2,
            batch_size=64,
        ),
        compare=CompareStage(
            obs_kinds=("pixel", "latent"),
            total_timesteps=512,
            seeds=(0, 1),
            n_envs=2,
            eval_freq=256,
            eval_episodes=2,
            final_eval_episodes=3,
            overrides={"ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 2}},
            workers=1,
        ),
    ),
    # The default: five arms, five seeds, on a task small enough to finish on a shared 2-core
    # machine (see README for how it was chosen and what the larger candidates cost).
    "quick": Preset(
        env=EnvSpec("MiniGrid-Empty-5x5-v0", frame_size=(40, 40)),
        collect=replace(COLLECT, n_frames=20_000),
        vae=replace(
            VAE,
            model={"kind": "beta-vae", "latent_dim": 16, "channels": [16, 32, 64]},
            epochs=10,
            batch_size=128,
        ),
        compare=CompareStage(
            total_timesteps=30_000,
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
    ),
    # CarRacing on 2 CPU cores within the hour: envpool frames, a correlated collection
    # policy, bf16 where the CPU has it, and the same training wall-clock for both arms; the
    # best latent driver is then scored on gymnasium's own CarRacing-v3 over 100 tracks.
    "carracing": Preset(
        env=EnvSpec("CarRacing-v3", crop=(0, 12, 0, 0), frame_skip=2, backend="envpool"),
        collect=replace(COLLECT, n_frames=20_000, policy="brownian"),
        vae=replace(VAE, epochs=5, batch_size=128, max_seconds=420.0),
        compare=CompareStage(
            # random and pca: a frozen random encoder and PCA of the same code size, the
            # controls that say whether training the VAE matters on this game
            obs_kinds=("pixel", "latent", "random", "pca"),
            total_timesteps=2_000_000,
            max_train_seconds=300.0,
            seeds=(0, 1, 2, 3, 4),  # 3 seeds left the intervals overlapping; 5 separate them
            n_envs=8,
            eval_freq=10_000,
            eval_episodes=2,
            eval_seed=20_000,  # chosen on other tracks than the canonical ones (10000 on)
            final_eval_episodes=5,
            workers=2,
        ),
        canonical=CanonicalStage(episodes=100, max_seconds=900.0),
    ),
    # World Models' recipe on CarRacing within two hours on 2 CPU cores: V; M until its
    # validation NLL stops improving or its budget ends; PPO on z (V) and on [z, h] (V + M);
    # then C on [z, h] by CMA-ES (linear, and with a hidden layer) in the real env and by
    # CMA-ES inside M's dream. Every driver is chosen on the tracks from 20000 (envpool; each
    # driver's 4 best evaluations then on 20 more from 21000) and scored on gymnasium's own tracks
    # from 10000. `--cluster` scores CMA-ES on Ray. PPO gets
    # 20 minutes (PPO on [z, h] scored 676 after 10, 765 after 20; 813 with sampled actions),
    # so each C gets 10 to stay inside two hours, where scoring 100 gymnasium tracks takes
    # about 9 minutes a driver: each PPO driver is scored once, by its mode or with sampled
    # actions, whichever played better on 20 tracks of its own (the 20 after its shortlist's,
    # from 21020, on envpool).
    "worldmodels": Preset(
        env=EnvSpec("CarRacing-v3", crop=(0, 12, 0, 0), frame_skip=2, backend="envpool"),
        collect=replace(COLLECT, n_frames=50_000, policy="brownian"),
        vae=replace(VAE, epochs=5, batch_size=128, max_seconds=420.0),
        memory=replace(MEMORY, epochs=200, patience=10, max_seconds=600.0),
        compare=CompareStage(
            obs_kinds=("latent", "latent+h"),
            total_timesteps=5_000_000,
            max_train_seconds=1200.0,
            seeds=(0,),
            n_envs=8,
            eval_freq=20_000,
            eval_episodes=4,
            eval_seed=20_000,
            final_eval_episodes=5,
            # each PPO driver kept as the best of its 4 best evaluations on 20 more tracks
            # (from 21000): in a re-run of one recipe run's PPO (150 s), the policy it kept
            # scored 862.0 on the 100 tracks where the run's best 4-track evaluation's 796.3
            overrides={"ppo": {"shortlist": 4, "shortlist_episodes": 20}},
            workers=2,
        ),
        canonical=CanonicalStage(
            episodes=100,
            max_seconds=900.0,
            backends=("gymnasium",),
            sampled=True,
            choose_on=20,
        ),
        controllers=ControllerStage(
            kinds=("cmaes", "cmaes-hidden", "dream-cmaes"),
            max_train_seconds=600.0,
            eval_freq=100_000,
        ),
    ),
    # GPU-machine scale on CarRacing: ~10k rollouts for the VAE, 1M agent steps, 5 seeds.
    "full": Preset(
        env=EnvSpec("CarRacing-v3", crop=(0, 12, 0, 0), frame_skip=2),
        collect=replace(COLLECT, n_frames=10_000 * 1_000, policy="brownian"),
        vae=replace(VAE, epochs=10, batch_size=1024),
        compare=CompareStage(
            obs_kinds=("pixel", "latent", "random", "pca"),
            total_timesteps=1_000_000,
            seeds=(0, 1, 2, 3, 4),
            eval_freq=50_000,
            eval_episodes=10,
            final_eval_episodes=50,
            shifted_env_kwargs={"domain_randomize": True},
            workers=1,
            subprocess_envs=True,
        ),
    ),
}

# The pipeline's flags, and the flat names its settings had before they were grouped by stage
# (still accepted by --set and by run_pipeline's settings): flat name -> (flag, dotted key).
# The dictionaries have no flag; set through their flat name they are merged, as any
# dictionary setting is.
FLAT_SETTINGS: dict[str, tuple[str | None, str]] = {
    "env_id": ("--env", "env.env_id"),
    "frame_size": ("--frame-size", "env.frame_size"),
    "collect_frames": ("--collect-frames", "collect.n_frames"),
    "collect_policy": ("--collect-policy", "collect.policy"),
    "max_episode_steps": ("--max-episode-steps", "env.max_episode_steps"),
    "crop": ("--crop", "env.crop"),
    "frame_skip": ("--frame-skip", "env.frame_skip"),
    "vae_model": (None, "vae.model"),
    "vae_epochs": ("--vae-epochs", "vae.epochs"),
    "vae_batch_size": ("--vae-batch-size", "vae.batch_size"),
    "agent_steps": ("--agent-steps", "compare.total_timesteps"),
    "seeds": ("--seeds", "compare.seeds"),
    "n_envs": ("--n-envs", "compare.n_envs"),
    "eval_freq": ("--eval-freq", "compare.eval_freq"),
    "eval_episodes": ("--eval-episodes", "compare.eval_episodes"),
    "final_eval_episodes": ("--final-episodes", "compare.final_eval_episodes"),
    "overrides": (None, "compare.overrides"),
    "shifted_env_kwargs": (None, "compare.shifted_env_kwargs"),
    "workers": ("--workers", "compare.workers"),
    "subprocess_envs": ("--subproc", "compare.subprocess_envs"),
    "algo": ("--algo", "compare.algo"),
    "obs_kinds": ("--obs", "compare.obs_kinds"),
    "deterministic_eval": ("--stochastic-eval", "compare.deterministic_eval"),
    "backend": ("--backend", "env.backend"),
    "vae_precision": ("--vae-precision", "vae.precision"),
    "vae_max_seconds": ("--vae-max-seconds", "vae.max_seconds"),
    "max_train_seconds": ("--max-train-seconds", "compare.max_train_seconds"),
    "memory_model": (None, "memory.model"),
    "memory_epochs": ("--memory-epochs", "memory.epochs"),
    "memory_batch_size": ("--memory-batch-size", "memory.batch_size"),
    "memory_seq_len": ("--memory-seq-len", "memory.seq_len"),
    "canonical_episodes": ("--canonical-episodes", "canonical.episodes"),
    "canonical_max_seconds": ("--canonical-max-seconds", "canonical.max_seconds"),
    "eval_workers": ("--eval-workers", "canonical.workers"),
}


def _backend(value: Any) -> Any:
    if value not in BACKENDS:
        raise ValueError(f"must be one of {', '.join(BACKENDS)}; got {value!r}")
    return value


# Settings read before their type is checked: a square frame side may be one int.
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "env.frame_size": lambda v: as_frame_size(v) if isinstance(v, int | list | tuple) else v,
    "env.backend": _backend,
}


def default_out(name: str, preset: Preset) -> Path:
    """Where a pipeline run of the preset ``name`` goes by default."""
    return Path("runs") / "pipeline" / f"{name}__{preset.env.env_id.replace('/', '_')}"


def build_preset(
    preset: str | Preset,
    settings: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
) -> Preset:
    """The preset (a name in :data:`PRESETS`, or a :class:`Preset`) with ``settings`` applied
    in order, each a dotted key (or a flat name of :data:`FLAT_SETTINGS`) and its value.

    A key may name a whole section (``{"vae": {"epochs": 3}}``: each of its keys is set), a
    field (``vae.epochs``), or a key inside a dictionary field (``vae.model.latent_dim``); a
    dictionary value is merged into the dictionary it sets.

    Raises:
        ValueError: an unknown preset or key (naming the known ones), a value of the wrong
            type or out of range, or stage settings that contradict each other; one line,
            naming the key.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    changes: dict[str, dict[str, Any]] = {f.name: {} for f in fields(Preset)}
    items = settings.items() if isinstance(settings, Mapping) else settings
    for key, value in items:
        _apply(preset, changes, key, value)
    sections = {}
    for name, changed in changes.items():
        try:
            sections[name] = replace(getattr(preset, name), **changed)
        except (ValueError, TypeError) as e:
            raise ValueError(f"preset section {name}: {e}") from None
    return Preset(**sections)


def dotted_key(key: str) -> str:
    """A setting's dotted key: ``key`` itself, or the one its flat name stands for."""
    return FLAT_SETTINGS[key][1] if key in FLAT_SETTINGS else key


def setting_type(key: str) -> Any:
    """The type a setting holds (``Any`` inside a dictionary without a model config).

    Raises:
        ValueError: an unknown key, naming the known ones.
    """
    path = dotted_key(key).split(".")
    sections = {f.name: f.type for f in fields(Preset)}
    if path[0] not in sections:
        raise ValueError(
            _unknown(key, "preset setting", [f"{s}.FIELD" for s in sections], _all_keys())
        )
    cls = typing.get_type_hints(Preset)[path[0]]
    if len(path) == 1:
        return dict[str, Any]
    hints = typing.get_type_hints(cls)
    if path[1] not in hints:
        raise ValueError(_unknown(key, f"{path[0]} setting", list(hints), _all_keys()))
    if len(path) == 2:
        return hints[path[1]]
    if not _is_mapping(hints[path[1]]):
        raise ValueError(f"{path[0]}.{path[1]} is not a dictionary: {key} cannot be set")
    model = MODEL_CONFIGS.get(path[0]) if path[1] == "model" else None
    if model is None:
        return Any
    known = _model_keys(model, path[0])
    if path[2] not in known or len(path) > 3:
        dotted = [f"{path[0]}.model.{k}" for k in known]
        raise ValueError(_unknown(key, f"{path[0]}.model key", known, dotted))
    return typing.get_type_hints(model)[path[2]]


def parse_setting(item: str) -> tuple[str, Any]:
    """``"vae.epochs=3"`` -> ``("vae.epochs", 3)``: a ``--set`` item, its value read as JSON
    (a bare word where the setting holds text: ``collect.policy=brownian``).

    Raises:
        ValueError: not KEY=VALUE, an unknown key, or a value that is not JSON.
    """
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set takes KEY=VALUE, e.g. vae.epochs=3; got {item!r}")
    annotation = setting_type(key)
    try:
        return key, json.loads(text)
    except json.JSONDecodeError as e:
        if annotation is Any or _fits(text, annotation):
            return key, text
        raise ValueError(
            f"--set {key}: {text!r} is not a JSON value ({e.msg}); the setting holds "
            f"{_describe(annotation)}"
        ) from None


def _apply(preset: Preset, changes: dict[str, dict[str, Any]], key: str, value: Any) -> None:
    """Check one setting and record it in ``changes`` (section -> field -> value)."""
    annotation = setting_type(key)
    path = dotted_key(key).split(".")
    section = path[0]
    if len(path) == 1:
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} is a section of the preset: give an object of its settings")
        for name, v in value.items():
            _apply(preset, changes, f"{section}.{name}", v)
        return
    name = path[1]
    current = changes[section].get(name, getattr(getattr(preset, section), name))
    if len(path) > 2 or (_is_mapping(annotation) and isinstance(value, Mapping)):
        if len(path) > 2 and value is not None:
            check_value(value, annotation, ".".join(path))
        patch = value
        for part in reversed(path[2:]):
            patch = {part: patch}
        changes[section][name] = merge_patch(current, patch)
        return
    if ".".join(path) in CONVERTERS:
        try:
            value = CONVERTERS[".".join(path)](value)
        except ValueError as e:
            raise ValueError(f"{'.'.join(path)}: {e}") from None
    value = _coerce(value, annotation)
    check_value(value, annotation, ".".join(path))
    meta = {f.name: f.metadata for f in fields(getattr(preset, section))}[name]
    problem = range_error(".".join(path), value, dict(meta)) if "help" in meta else None
    if problem:
        raise ValueError(problem)
    changes[section][name] = value


def merge_patch(target: Any, patch: Any) -> Any:
    """``patch`` applied to ``target`` as a JSON merge patch (RFC 7386): objects merge key by
    key, a ``None`` value removes its key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _coerce(value: Any, annotation: Any) -> Any:
    """A JSON list for a tuple field; an int for a float field."""
    arms = _arms(annotation)
    if isinstance(value, list) and any(typing.get_origin(a) is tuple for a in arms):
        return tuple(value)
    if type(value) is int and float in arms and int not in arms:
        return float(value)
    return value


def _model_keys(cls: type, section: str) -> list[str]:
    return [f.name for f in fields(cls) if f.name not in DATA_DECIDED[section]]


def _all_keys() -> list[str]:
    """Every dotted key of a field, and the flat names."""
    keys = [
        f"{section.name}.{f.name}"
        for section in fields(Preset)
        for f in dataclasses.fields(typing.get_type_hints(Preset)[section.name])
    ]
    return keys + list(FLAT_SETTINGS)


def _unknown(key: str, what: str, known: list[str], candidates: list[str]) -> str:
    """``unknown WHAT 'KEY'; did you mean ...? (known: ...)``, the guess among
    ``candidates`` (else ``known``) given as its dotted key."""
    close = difflib.get_close_matches(key, candidates or known, n=1)
    hint = f"; did you mean {dotted_key(close[0])}?" if close else ""
    return f"unknown {what} {key!r}{hint} (known: {', '.join(known)})"
