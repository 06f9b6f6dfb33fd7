"""The training algorithms of ``train-agent``, by their command-line name.

Each :class:`Algorithm` says how its agents are built, trained and loaded:

- a stable-baselines3 algorithm (sb3-contrib's ``RecurrentPPO`` too) names its class, imported
  when first asked for (with the install to run when the package is optional); SB3's learn
  loop trains it (:mod:`agents.agent_training`) and its bundle holds ``agent.zip`` and
  ``best_agent.zip``;
- any other algorithm brings a train hook and a load hook: World Models' controller C
  (:mod:`agents.controller.cmaes`) trains by CMA-ES and loads from ``controller.safetensors``.

An algorithm is added with one entry of :data:`ALGORITHMS` and its module. This module sits
below the agent configuration: it imports the algorithms' own modules, never the modules that
build envs or train.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import gymnasium as gym

from agents.controller.cmaes import (
    CHOICE_SEED_OFFSET,
    CMAESConfig,
    load_controller,
    train_controller,
)

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm


class RunSettings(Protocol):
    """What a train hook reads of an agent's configuration (an
    :class:`~agents.agent_config.AgentConfig`)."""

    @property
    def obs(self) -> str: ...

    @property
    def dream(self) -> bool: ...

    @property
    def algo_kwargs(self) -> dict[str, Any]: ...

    @property
    def total_timesteps(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def eval_freq(self) -> int: ...

    @property
    def eval_seed(self) -> int: ...

    @property
    def checkpoint_freq(self) -> int: ...

    @property
    def max_train_seconds(self) -> float | None: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TrainRun:
    """What ``train-agent`` hands a train hook.

    Attributes:
        cfg: the run's configuration.
        out: the agent bundle (its model and memory already copied in).
        observation_space, action_space: those of the real env the agent is evaluated in.
        evaluate: ``evaluate(policy) -> (mean, std)`` return of the configured evaluation
            episodes in the real env, on fixed seeds (``policy`` has SB3's ``predict``).
        make_env: ``make_env({"cfg": cfg.to_dict(), "bundle": str(out), "dream": ...})``
            builds one env of the run on the CPU (the dream or the real env); a module-level
            function, so worker processes and Ray actors can be handed it.
        latent_data: the latent dataset the dream starts from ("" outside the dream).
        progress: show a progress bar.
        resume: continue from the bundle's checkpoint.
        on_steps: called with the env steps each step of training took.
    """

    cfg: RunSettings
    out: Path
    observation_space: gym.Space
    action_space: gym.Space
    evaluate: Callable[[Any], tuple[float, float]]
    make_env: Callable[[dict[str, Any]], Any]
    latent_data: str
    progress: bool
    resume: bool
    on_steps: Callable[[int], None] | None


# The action spaces of SB3's on-policy algorithms (PPO, A2C, RecurrentPPO).
ANY_ACTIONS: tuple[type[gym.Space], ...] = (
    gym.spaces.Box,
    gym.spaces.Discrete,
    gym.spaces.MultiDiscrete,
    gym.spaces.MultiBinary,
)

# ``train(run)`` -> the entries of the bundle's ``config.json`` (``final_mean_return``,
# ``train_seconds``, ``steps_per_second`` at least); ``load(bundle, observation_space,
# action_space, which)`` -> the bundle's ``"final"`` or ``"best"`` agent with SB3's ``predict``.
TrainHook = Callable[[TrainRun], dict[str, Any]]
LoadHook = Callable[[Path, gym.Space, gym.Space, str], Any]


@dataclass(frozen=True)
class Algorithm:
    """One training algorithm: an SB3 class, or a train hook and a load hook.

    Attributes:
        name: its command-line name (``--algo``, the hyperparameters' section).
        title: how messages name it.
        sb3_module, sb3_name: the module and name of its SB3 class.
        extra: the ``worldvae`` extra that installs ``sb3_module`` when it is optional.
        recurrent: its policies carry an LSTM (``MlpLstmPolicy``, ``CnnLstmPolicy``).
        train, load: the hooks of an algorithm that SB3 does not train.
        action_spaces: the action spaces it can act in (SB3 asserts them only when the agent
            is built; :mod:`agents.preflight` checks them before a run writes anything).
        obs_kinds: the arms it trains on (empty: every arm).
    """

    name: str
    title: str
    sb3_module: str = ""
    sb3_name: str = ""
    extra: str = ""
    recurrent: bool = False
    train: TrainHook | None = None
    load: LoadHook | None = None
    action_spaces: tuple[type[gym.Space], ...] = ANY_ACTIONS
    obs_kinds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        hooks = (self.train is not None, self.load is not None)
        if self.is_sb3 == any(hooks) or any(hooks) != all(hooks):
            raise ValueError(
                f"algorithm {self.name!r} needs either an SB3 class or a train and a load hook"
            )

    @property
    def is_sb3(self) -> bool:
        """True when SB3's learn loop trains it and its bundle holds an SB3 zip."""
        return bool(self.sb3_module and self.sb3_name)

    def sb3_class(self) -> type[BaseAlgorithm]:
        """Its SB3 class, imported now.

        Raises:
            ValueError: a hook-trained algorithm.
            ImportError: its optional package is missing (the message gives the install).
        """
        if not self.is_sb3:
            raise ValueError(f"{self.name} is not an SB3 algorithm; {self.title} trains itself")
        try:
            module = importlib.import_module(self.sb3_module)
        except ImportError as e:
            if not self.extra:
                raise
            package = self.sb3_module.replace("_", "-")
            raise ImportError(
                f"--algo {self.name} needs {package}: pip install 'worldvae[{self.extra}]'"
            ) from e
        return cast("type[BaseAlgorithm]", getattr(module, self.sb3_name))

    def policy(self, arm_policy: str) -> str:
        """The SB3 policy for an arm's (``"MlpPolicy"``, ``"CnnPolicy"``): with an LSTM after
        the features for a recurrent algorithm."""
        return arm_policy.replace("Policy", "LstmPolicy") if self.recurrent else arm_policy


def _train_cmaes(run: TrainRun) -> dict[str, Any]:
    """World Models' controller: CMA-ES on a policy over ``[z, h]`` (linear, or with the
    ``cmaes`` section's ``hidden`` units in one hidden layer); it checkpoints every
    ``checkpoint_freq`` env steps and resumes from there. A ``shortlist`` is chosen on tracks
    from the evaluation seed + 1000."""
    cfg = run.cfg
    if cfg.obs != "latent+h":
        raise ValueError("the CMA-ES controller reads [z, h]: use --obs latent+h with --memory")
    es_cfg = CMAESConfig.from_dict(cfg.algo_kwargs)
    spec = {
        "cfg": cfg.to_dict(),
        "bundle": str(run.out),
        "dream": cfg.dream,
        "latent_data": run.latent_data,
        "rollouts": es_cfg.rollouts,
        "hidden": es_cfg.hidden,
        "obs_dim": int((run.observation_space.shape or (0,))[0]),
        "action_space": run.action_space,
        "make_env": run.make_env,
    }
    return train_controller(
        spec,
        es_cfg,
        cfg.total_timesteps,
        cfg.seed,
        run.out,
        run.evaluate,
        cfg.eval_freq,
        run.progress,
        checkpoint_every_steps=cfg.checkpoint_freq,
        resume=run.resume,
        on_steps=run.on_steps,
        max_seconds=cfg.max_train_seconds,
        choice_seed=cfg.eval_seed + CHOICE_SEED_OFFSET,
    )


def _sb3(name: str, title: str, **fields: Any) -> Algorithm:
    return Algorithm(name, title, "stable_baselines3", title, **fields)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        _sb3("ppo", "PPO"),
        _sb3("a2c", "A2C"),
        _sb3("dqn", "DQN", action_spaces=(gym.spaces.Discrete,)),
        _sb3("sac", "SAC", action_spaces=(gym.spaces.Box,)),
        Algorithm(
            "recurrentppo",
            "RecurrentPPO",
            sb3_module="sb3_contrib",
            sb3_name="RecurrentPPO",
            extra="contrib",
            recurrent=True,
        ),
        Algorithm(
            "cmaes",
            "CMA-ES controller",
            train=_train_cmaes,
            load=load_controller,
            action_spaces=(gym.spaces.Discrete, gym.spaces.Box),
            obs_kinds=("latent+h",),
        ),
    )
}


def get_algorithm(name: str) -> Algorithm:
    """The registry's entry ``name``.

    Raises:
        ValueError: an unknown name (the known ones listed).
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {tuple(ALGORITHMS)}")
    return ALGORITHMS[name]


def sb3_algorithm(name: str) -> type[BaseAlgorithm]:
    """The SB3 class of the algorithm ``name`` (see :meth:`Algorithm.sb3_class`)."""
    return get_algorithm(name).sb3_class()


def sb3_algorithm_names() -> tuple[str, ...]:
    """The names of the algorithms SB3 trains."""
    return tuple(name for name, a in ALGORITHMS.items() if a.is_sb3)
