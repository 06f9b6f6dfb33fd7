"""Hyperparameter search for one agent (``worldvae tune``): Optuna's TPE sampler over a small
table of ranges per algorithm, trials pruned on their periodic evaluations by a median rule, a
wall-clock budget for the whole study, and the study kept in SQLite so that re-running the
same command continues it.

Every trial trains the same agent (env, arm, model, seed, steps) with other hyperparameters,
through :func:`agents.agent_training.train_agent`, and is scored by the mean return of its
final evaluation on the same fixed evaluation seeds as every other trial. Each periodic
evaluation is reported to Optuna at its nominal step (the multiple of ``eval_freq`` nearest its
env steps, so that trials whose rollouts differ in length are compared at the same point), and
:class:`optuna.pruners.MedianPruner` stops a trial whose evaluation falls below the median of
the earlier trials' at that step.

A study folder holds:

===============  ==============================================================================
``study.db``     Optuna's storage (SQLite): trials, their parameters and evaluations
``trials/N``     the agent bundle of each complete trial (those of pruned, failed and cut
                 trials are removed)
``trials.csv``   one row per trial: number, state, value, seconds, last step, parameters
``best.yaml``    the best trial's hyperparameters, in the format of ``agents/hyperparams``
``history.png``  each trial's value and the best so far
``tb/``          TensorBoard: ``tune/value``, ``tune/best_value``, and the HParams view
===============  ==============================================================================

Trials run one at a time in this process, ``workers`` at a time in local processes bound to
this one (:func:`worldvae.workers.parent_bound_pool`), or as Ray tasks with ``cluster`` set
(:mod:`envs.cluster`; the folder must then be on storage every node sees). Each worker takes
its own trial from the study (``study.ask``) and reports to it, as Optuna's parallel
optimisation does. A trial still running when the budget ends, or when the command is killed,
is *cut*: it counts for nothing, and the next run of the command trains its parameters again.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from tqdm.auto import tqdm

from agents.agent_config import AgentConfig, validate_hyperparams
from agents.agent_training import EvalListener, train_agent
from agents.preflight import check_agent_run
from envs.cluster import connect_ray, run_tasks, uses_ray
from worldvae.atomic import atomic_open, atomic_path
from worldvae.config_fields import check_ranges, option
from worldvae.rundir import ForeignDirError, RunDirLock, check_folder, check_ours, remove_owned
from worldvae.workers import cpu_cores, parent_bound_pool

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'worldvae[tune]' (or pip install 'optuna>=4')"
STUDY_NAME = "tune"
STUDY_FILE = "study.db"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
HISTORY_PNG = "history.png"
TB_DIR = "tb"
# What a study folder holds (SQLite's journal files included); ``overwrite`` removes these.
TUNE_ENTRIES = (
    STUDY_FILE,
    f"{STUDY_FILE}-journal",
    f"{STUDY_FILE}-wal",
    f"{STUDY_FILE}-shm",
    TRIALS_DIR,
    TRIALS_CSV,
    BEST_YAML,
    HISTORY_PNG,
    TB_DIR,
)
SQLITE_TIMEOUT_S = 60  # parallel trials write to one SQLite file: wait for its lock this long


def import_optuna() -> Any:
    """The ``optuna`` module, or an ImportError naming the extra that installs it."""
    try:
        import optuna
    except ImportError as e:
        raise ImportError(f"worldvae tune needs Optuna: {INSTALL_HINT}") from e
    # Optuna announces each study it creates or loads at INFO; the progress bars say enough.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ---------------------------------------------------------------------------------------------
# The search space


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter's range: a number from ``low`` to ``high`` (log-uniform when
    ``log``), or one of ``choices``.

    ``fits`` ties a choice to the trial's length: ``"rollout"`` keeps the values whose rollout
    (value x ``n_envs`` env steps) fits in a trial, ``"half"`` those no larger than half a
    trial (e.g. ``learning_starts``); the smallest value is always kept.
    """

    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()
    fits: Literal["", "rollout", "half"] = ""

    def suggest(self, trial: Any, name: str) -> Any:
        """The trial's value for ``name``."""
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what the study records of its space."""
        if self.choices:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}


def _log(low: float, high: float) -> Dimension:
    return Dimension(low, high, log=True)


def _one_of(*choices: Any, fits: Literal["", "rollout", "half"] = "") -> Dimension:
    return Dimension(choices=choices, fits=fits)


# ``net_arch`` by name: the hidden layers of the policy's (and its critic's) MLP head.
NET_ARCHS: dict[str, list[int]] = {"small": [64, 64], "medium": [256, 256]}

_GAMMA = _one_of(0.95, 0.98, 0.99, 0.995, 0.999)
_GAE_LAMBDA = _one_of(0.8, 0.9, 0.95, 0.98, 1.0)
_NET_ARCH = _one_of(*NET_ARCHS)
_PPO: dict[str, Dimension] = {
    "learning_rate": _log(1e-5, 3e-3),
    "n_steps": _one_of(32, 64, 128, 256, 512, 1024, 2048, fits="rollout"),
    "batch_size": _one_of(32, 64, 128, 256, 512),  # at most one rollout (clipped per trial)
    "n_epochs": _one_of(1, 4, 10, 20),
    "gamma": _GAMMA,
    "gae_lambda": _GAE_LAMBDA,
    "clip_range": _one_of(0.1, 0.2, 0.3, 0.4),
    "ent_coef": _log(1e-8, 0.1),
    "net_arch": _NET_ARCH,
}
# What each algorithm's trials vary; every other key keeps its value from the hyperparameter
# files. After the RL zoo's samplers (rl-zoo3, hyperparams_opt.py), narrowed to a few values
# per key so that a study of tens of trials covers them.
SEARCH_SPACES: dict[str, dict[str, Dimension]] = {
    "ppo": _PPO,
    "recurrentppo": _PPO,
    "a2c": {
        "learning_rate": _log(1e-5, 3e-3),
        "n_steps": _one_of(8, 16, 32, 64, 128, fits="rollout"),
        "gamma": _GAMMA,
        "gae_lambda": _GAE_LAMBDA,
        "ent_coef": _log(1e-8, 0.1),
        "net_arch": _NET_ARCH,
    },
    "sac": {
        "learning_rate": _log(1e-5, 3e-3),
        "batch_size": _one_of(64, 128, 256, 512),
        "gamma": _GAMMA,
        "tau": _one_of(0.005, 0.01, 0.02, 0.05),
        "train_freq": _one_of(1, 4, 8, 16),
        "learning_starts": _one_of(100, 1_000, 10_000, fits="half"),
        "net_arch": _NET_ARCH,
    },
    "dqn": {
        "learning_rate": _log(1e-5, 1e-2),
        "batch_size": _one_of(32, 64, 128, 256),
        "gamma": _GAMMA,
        "train_freq": _one_of(1, 4, 8, 16),
        "target_update_interval": _one_of(100, 1_000, 5_000, 10_000, fits="half"),
        "exploration_fraction": Dimension(0.05, 0.5),
        "exploration_final_eps": Dimension(0.0, 0.2),
        "learning_starts": _one_of(100, 1_000, 10_000, fits="half"),
        "net_arch": _NET_ARCH,
    },
}


def search_space(algo: str, n_envs: int, steps: int) -> dict[str, Dimension]:
    """The space of ``algo`` for trials of ``steps`` env steps in ``n_envs`` envs: the choices
    marked ``fits`` narrowed to those that fit a trial.

    Raises:
        ValueError: ``algo`` has no search space (the ones that have are named).
    """
    if algo not in SEARCH_SPACES:
        raise ValueError(
            f"tune has no search space for --algo {algo}; choose one of {', '.join(SEARCH_SPACES)}"
        )
    fitted = {}
    for name, dim in SEARCH_SPACES[algo].items():
        if dim.fits:
            scale, limit = (n_envs, steps) if dim.fits == "rollout" else (1, steps // 2)
            keep = tuple(c for c in dim.choices if c * scale <= limit) or dim.choices[:1]
            dim = dataclasses.replace(dim, choices=keep)
        fitted[name] = dim
    return fitted


def sample_section(
    trial: Any, space: dict[str, Dimension], base: dict[str, Any], n_envs: int
) -> dict[str, Any]:
    """The algorithm's hyperparameter section a trial trains with: ``base`` (the resolved
    section, without ``n_envs``) with the trial's values, ``net_arch`` inside
    ``policy_kwargs``, and ``batch_size`` at most one rollout (``n_steps`` x ``n_envs``)."""
    section = copy.deepcopy(base)
    for name, dim in space.items():
        value = dim.suggest(trial, name)
        if name == "net_arch":
            section["policy_kwargs"] = dict(section.get("policy_kwargs") or {})
            section["policy_kwargs"]["net_arch"] = list(NET_ARCHS[value])
        else:
            section[name] = value
    if "batch_size" in space and "n_steps" in section:
        section["batch_size"] = min(section["batch_size"], section["n_steps"] * n_envs)
    return section


# ---------------------------------------------------------------------------------------------
# Settings, trials and outcomes


@dataclass(frozen=True)
class TuneConfig:
    """How a study searches: how many trials, for how long, how they are sampled and pruned,
    and where they run. Fields declared with :func:`~worldvae.config_fields.option` are the
    ``worldvae tune`` flags."""

    trials: int = option(50, "trials in all, those of earlier runs of the study counted", 1, 10**6)
    budget_seconds: float | None = option(
        None,
        "wall-clock seconds for the whole study, earlier runs counted (default: no limit)",
        0.0,
        1e9,
        low_open=True,
    )
    startup_trials: int = option(
        5, "trials sampled at random before TPE, and complete before any is pruned", 0, 10**6
    )
    warmup_steps: int | None = option(
        None, "env steps a trial trains before it may be pruned (default: a third)", 0, 10**11
    )
    sampler_seed: int = option(0, "seed of the sampler (trial k samples with seed + k)", 0, 2**31)
    workers: int = option(1, "trials at once: local processes, or Ray tasks (--cluster)", 1, 1024)
    cluster: str = "local"
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class TrialSpec:
    """What a worker needs to run one trial (picklable: it goes to processes and Ray tasks)."""

    storage: str  # the study's SQLite URL
    config: dict[str, Any]  # the base AgentConfig, as its to_dict
    space: dict[str, Dimension]
    trials_dir: str
    sampler_seed: int
    startup_trials: int
    warmup_steps: int
    parallel: bool  # other trials run meanwhile: TPE's constant liar avoids sampling alike
    deadline: float | None  # time.time() at which the budget ends
    threads: int | None  # torch threads in the worker (None: as they are)


State = Literal["complete", "pruned", "failed", "cut", "skipped"]
COUNTED: tuple[State, ...] = ("complete", "pruned", "failed")


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended; ``skipped``: none was started (the budget had ended)."""

    number: int | None
    state: State
    value: float | None = None
    message: str = ""


@dataclass(frozen=True)
class TuneResult:
    """A study after this run of the command."""

    out: Path
    trials: int  # counted: complete, pruned and failed
    complete: int
    pruned: int
    failed: int
    seconds: float  # the study's wall-clock, earlier runs included
    best_number: int | None
    best_value: float | None
    best_yaml: Path | None


def trial_name(number: int) -> str:
    """The folder of trial ``number`` under ``trials/``."""
    return f"{number:05d}"


def nominal_step(steps: int, eval_freq: int) -> int:
    """The multiple of ``eval_freq`` nearest ``steps``: where an evaluation is compared."""
    return round(steps / eval_freq) * eval_freq


class TrialReporter(EvalListener):
    """Reports each evaluation to the Optuna trial; stops a trial that the pruner prunes.

    A trial is ``pruned`` only when it stops training for it: the final evaluation (also of
    a run ended by ``max_train_seconds``) is reported, and the trial is then complete.
    """

    def __init__(self, trial: Any, eval_freq: int, total_steps: int):
        super().__init__()
        self.trial, self.eval_freq, self.total_steps = trial, eval_freq, total_steps
        self.reported: set[int] = set()
        self.last: float | None = None
        self.pruned = False

    def on_evaluation(self, row: dict[str, float]) -> None:
        step = nominal_step(int(row["steps"]), self.eval_freq)
        self.last = float(row["mean_return"])
        if step in self.reported:  # two evaluations round to one step: the first stands
            return
        self.reported.add(step)
        self.trial.report(self.last, step)
        if row["steps"] < self.total_steps and self.trial.should_prune():
            self.stop = True

    def _on_step(self) -> bool:
        self.pruned = self.pruned or self.stop  # a step after the verdict: training stops here
        return not self.stop


class Deadline(EvalListener):
    """Stops a run at the first env step after ``deadline`` (``time.time()``; None: never)."""

    def __init__(self, deadline: float | None):
        super().__init__()
        self.deadline = deadline

    def _on_step(self) -> bool:
        if self.deadline is not None and time.time() >= self.deadline:
            self.stop = True
        return not self.stop


def rdb_storage(optuna: Any, url: str) -> Any:
    """Optuna's storage at the SQLite ``url``, waiting for the file's lock when trials in
    other processes write."""
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    )


def _load_study(optuna: Any, spec: TrialSpec, storage: Any) -> Any:
    """The study, with the sampler and pruner of ``spec`` (Optuna stores neither)."""
    with warnings.catch_warnings():  # constant_liar is experimental in Optuna 4
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            n_startup_trials=spec.startup_trials,
            seed=spec.sampler_seed,
            constant_liar=spec.parallel,
        )
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_steps
    )
    return optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner)


def run_trial(
    spec: TrialSpec, storage: Any = None, on_steps: Callable[[int], None] | None = None
) -> TrialOutcome:
    """Take the study's next trial, train it, and tell the study how it ended.

    ``storage`` is the study's (a new connection to ``spec.storage`` when None). A trial the
    algorithm cannot train with (refused settings, a diverging run) is failed with its error
    recorded; one cut by the deadline is failed and its parameters queued again.
    """
    if spec.threads is not None:
        import torch

        torch.set_num_threads(spec.threads)
    if spec.deadline is not None and time.time() >= spec.deadline:
        return TrialOutcome(None, "skipped")
    optuna = import_optuna()
    own = storage is None
    storage = rdb_storage(optuna, spec.storage) if own else storage
    try:
        study = _load_study(optuna, spec, storage)
        trial = study.ask()
        return _train_trial(optuna, study, trial, spec, on_steps)
    finally:
        if own:
            storage.engine.dispose()


def _train_trial(
    optuna: Any, study: Any, trial: Any, spec: TrialSpec, on_steps: Callable[[int], None] | None
) -> TrialOutcome:
    """Sample ``trial``'s hyperparameters, train them into ``trials/N``, tell the study."""
    failed = optuna.trial.TrialState.FAIL
    base = AgentConfig.from_dict(spec.config)
    section = sample_section(trial, spec.space, base.algo_kwargs, base.n_envs)
    trial.set_user_attr("hyperparams", {"n_envs": base.n_envs, **section})
    cfg = dataclasses.replace(base, algo_kwargs=section)
    out = Path(spec.trials_dir) / trial_name(trial.number)
    reporter = TrialReporter(trial, cfg.eval_freq, cfg.total_timesteps)
    deadline = Deadline(spec.deadline)
    start = time.perf_counter()
    try:
        result = train_agent(
            cfg, out, progress=False, on_steps=on_steps, callbacks=[reporter, deadline]
        )
    except Exception as e:  # settings the algorithm refuses, a run that diverges (NaN)
        message = f"{type(e).__name__}: {' '.join(str(e).split())}"
        trial.set_user_attr("error", message)
        study.tell(trial, state=failed)
        remove_owned(spec.trials_dir, [out.name])
        return TrialOutcome(trial.number, "failed", message=message)
    trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
    if reporter.pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        remove_owned(spec.trials_dir, [out.name])
        return TrialOutcome(trial.number, "pruned", reporter.last)
    if deadline.stop:
        study.tell(trial, state=failed)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        remove_owned(spec.trials_dir, [out.name])
        return TrialOutcome(trial.number, "cut")
    if not math.isfinite(result.final_mean_return):
        trial.set_user_attr("error", f"final return {result.final_mean_return}")
        study.tell(trial, state=failed)
        remove_owned(spec.trials_dir, [out.name])
        return TrialOutcome(trial.number, "failed", message="non-finite final return")
    study.tell(trial, result.final_mean_return)
    return TrialOutcome(trial.number, "complete", result.final_mean_return)


# ---------------------------------------------------------------------------------------------
# The study folder


def study_url(out: Path) -> str:
    """The SQLite URL of the study in the folder ``out``."""
    return f"sqlite:///{(out / STUDY_FILE).resolve()}"


def study_settings(cfg: AgentConfig, space: dict[str, Dimension]) -> dict[str, Any]:
    """What must agree for a run of the command to continue a study: every trial's agent
    settings but the device, and the search space."""
    agent = {k: v for k, v in cfg.to_dict().items() if k != "device"}
    spec = {name: dim.to_dict() for name, dim in space.items()}
    return json.loads(json.dumps({"agent": agent, "space": spec}))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old.get("agent", {})) | set(new["agent"]))
    names = [k for k in keys if old.get("agent", {}).get(k) != new["agent"].get(k)]
    return names + (["search space"] if old.get("space") != new["space"] else [])


def open_study(optuna: Any, out: Path, storage: Any, settings: dict[str, Any]) -> Any:
    """The study in ``out``: created with ``settings``, or the one there when its settings
    are the same.

    Raises:
        ForeignDirError: ``study.db`` holds something else than a tune study.
        ValueError: the study there was made with other settings (those that differ named).
    """
    try:
        names = optuna.get_all_study_names(storage)
    except Exception as e:  # not an Optuna database
        raise ForeignDirError(
            f"{out / STUDY_FILE} is not a worldvae tune study ({type(e).__name__}); nothing "
            "was changed: choose an empty or new --out"
        ) from e
    if names and names != [STUDY_NAME]:
        raise ForeignDirError(
            f"{out / STUDY_FILE} holds other Optuna studies ({', '.join(names)}); nothing was "
            "changed: choose an empty or new --out"
        )
    if not names:
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize")
        study.set_user_attr("settings", settings)
        return study
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    differ = _differences(study.user_attrs.get("settings", {}), settings)
    if differ:
        raise ValueError(
            f"{out} holds a study with other settings ({', '.join(differ)}); re-run with the "
            "same settings to continue it, pass --overwrite to start afresh, or choose another "
            "--out"
        )
    return study


def requeue_cut_trials(optuna: Any, study: Any, trials_dir: Path) -> int:
    """Trials a killed run left running: failed (they count for nothing), their folders
    removed, and their parameters queued again. Returns how many."""
    state = optuna.trial.TrialState
    cut = study.get_trials(deepcopy=False, states=(state.RUNNING,))
    for t in cut:
        study.tell(t.number, state=state.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
        remove_owned(trials_dir, [trial_name(t.number)])
    if cut:
        logger.info("%d trial(s) cut by an earlier run will run again", len(cut))
    return len(cut)


def counts(optuna: Any, trial: Any) -> bool:
    """True for a trial that counts towards the study's trials: complete, pruned, or failed
    on its own (a failed trial without an error was cut, and runs again)."""
    state = optuna.trial.TrialState
    return trial.state in (state.COMPLETE, state.PRUNED) or (
        trial.state == state.FAIL and "error" in trial.user_attrs
    )


def best_trial(optuna: Any, study: Any) -> Any:
    """The complete trial of the highest value that records its hyperparameters (None: none)."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if "hyperparams" in t.user_attrs and t.value is not None
    ]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


# ---------------------------------------------------------------------------------------------
# What the study writes


def write_trials_csv(optuna: Any, study: Any, path: Path) -> None:
    """One row per trial: number, state, value, seconds, last reported step, the trial it
    retries, its error, and its parameters as trained."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({name for t in trials for name in t.params})
    fields = ["number", "state", "value", "seconds", "last_step", "retry_of", "error", *params]
    with atomic_open(path) as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for t in trials:
            cut = t.state == optuna.trial.TrialState.FAIL and not counts(optuna, t)
            trained = t.user_attrs.get("hyperparams", {})  # batch_size as lowered to a rollout
            w.writerow(
                {
                    "number": t.number,
                    "state": "cut" if cut else t.state.name.lower(),
                    "value": t.value if t.value is not None else "",
                    "seconds": t.user_attrs.get("seconds", ""),
                    "last_step": t.last_step if t.last_step is not None else "",
                    "retry_of": t.user_attrs.get("retry_of", ""),
                    "error": t.user_attrs.get("error", ""),
                    **{name: trained.get(name, t.params[name]) for name in t.params},
                }
            )


def best_yaml_text(trial: Any, cfg: AgentConfig, finished: int, command: str) -> str:
    """``best.yaml``: the best trial's algorithm section, a header saying where it comes from.

    Raises:
        ValueError: the section is not one the hyperparameter files accept (never expected).
    """
    section = {cfg.algo: trial.user_attrs["hyperparams"]}
    validate_hyperparams(section, BEST_YAML)
    header = [
        f"# The best of {finished} finished trials of `worldvae tune`: trial {trial.number}, "
        f"mean return {trial.value:.4g}",
        f"# over {cfg.eval_episodes} evaluation episodes (seeds from {cfg.eval_seed}) after "
        f"{cfg.total_timesteps} env steps on {cfg.env_id}, arm {cfg.obs}, seed {cfg.seed}.",
        "# Use it with `worldvae train-agent ... --hyperparams best.yaml` (or a preset's",
        "# compare.hyperparams_file); its section replaces the keys it names.",
    ]
    if command:
        header.append(f"# Made by: {command}")
    body = yaml.safe_dump(section, sort_keys=False, default_flow_style=None)
    return "\n".join(header) + "\n" + body


def plot_history(optuna: Any, study: Any, path: Path, title: str) -> Path | None:
    """Each finished trial's value (pruned ones at their last evaluation) and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED))
    complete = [(t.number, t.value) for t in trials if t.state == state.COMPLETE]
    pruned = [
        (t.number, t.value) for t in trials if t.state == state.PRUNED and t.value is not None
    ]
    if not complete and not pruned:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    if complete:
        xs, ys = zip(*complete, strict=True)
        ax.plot(xs, ys, "o", color="tab:blue", label="complete trial (final evaluation)")
        best = [max(ys[: i + 1]) for i in range(len(ys))]
        ax.step(xs, best, where="post", color="tab:red", label="best so far")
    if pruned:
        xs, ys = zip(*pruned, strict=True)
        ax.plot(xs, ys, "x", color="grey", label="pruned trial (last evaluation)")
    ax.set_xlabel("trial")
    ax.set_ylabel("mean evaluation return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Running a study


class Scheduler:
    """Hands out trials while the study wants more and the budget lasts; writes the study's
    files and moves the progress bars as trials end."""

    def __init__(
        self,
        optuna: Any,
        study: Any,
        cfg: AgentConfig,
        settings: TuneConfig,
        out: Path,
        spec: TrialSpec,
        progress: bool,
        command: str,
    ):
        self.optuna, self.study, self.cfg, self.settings = optuna, study, cfg, settings
        self.out, self.spec, self.command = out, spec, command
        self.counted = sum(counts(optuna, t) for t in study.get_trials(deepcopy=False))
        self.first_seed = settings.sampler_seed + len(study.get_trials(deepcopy=False))
        self.handed = self.in_flight = 0
        self.start = time.time()
        self.before = float(study.user_attrs.get("seconds", 0.0))
        budget = settings.budget_seconds
        self.deadline = None if budget is None else self.start + budget - self.before
        self.outcomes: list[TrialOutcome] = []
        self.bars = self._bars(progress)
        self.writer: Any = None
        self.last_tick = 0.0

    def _bars(self, progress: bool) -> tuple[Any, Any]:
        trials = tqdm(
            total=self.settings.trials,
            initial=min(self.counted, self.settings.trials),
            unit="trial",
            desc="tune",
            disable=not progress,
            dynamic_ncols=True,
        )
        budget = self.settings.budget_seconds
        seconds = tqdm(
            total=None if budget is None else round(budget),
            initial=round(self.before),
            unit="s",
            desc="budget" if budget is not None else "seconds",
            disable=not progress,
            dynamic_ncols=True,
        )
        return trials, seconds

    def elapsed(self) -> float:
        """The study's wall-clock seconds, earlier runs included."""
        return self.before + time.time() - self.start

    def next_spec(self) -> TrialSpec | None:
        """The next trial to run, or None when the study has its trials or the budget ended."""
        if self.counted + self.in_flight >= self.settings.trials:
            return None
        if self.deadline is not None and time.time() >= self.deadline:
            return None
        spec = dataclasses.replace(
            self.spec, sampler_seed=self.first_seed + self.handed, deadline=self.deadline
        )
        self.handed += 1
        self.in_flight += 1
        return spec

    def tick(self, _steps: int = 0) -> None:
        """Move the seconds bar (at most once a second)."""
        now = time.time()
        if now - self.last_tick >= 1.0:
            self.last_tick = now
            bar = self.bars[1]
            bar.update(max(0, round(self.elapsed()) - bar.n))

    def done(self, outcome: TrialOutcome) -> bool:
        """Record a finished trial; True: go on handing out trials."""
        self.in_flight -= 1
        self.outcomes.append(outcome)
        if outcome.state in COUNTED:
            self.counted += 1
            self.bars[0].update(1)
        if outcome.state == "failed":
            logger.warning("trial %s failed: %s", outcome.number, outcome.message)
        self.study.set_user_attr("seconds", round(self.elapsed(), 3))
        self._log(outcome)
        self.write()
        self.tick()
        return True

    def _log(self, outcome: TrialOutcome) -> None:
        """TensorBoard: each complete trial's value, the best so far, and its parameters."""
        if outcome.state not in ("complete", "pruned") or outcome.number is None:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / TB_DIR))
        n = outcome.number
        if outcome.state == "pruned":
            if outcome.value is not None:
                self.writer.add_scalar("tune/pruned_value", outcome.value, n)
            return
        self.writer.add_scalar("tune/value", outcome.value, n)
        best = best_trial(self.optuna, self.study)
        if best is not None:
            self.writer.add_scalar("tune/best_value", best.value, n)
        trial = self.study.get_trials(deepcopy=False)[n]
        self.writer.add_hparams(
            dict(trial.params), {"tune/final_return": outcome.value}, run_name=trial_name(n)
        )
        self.writer.flush()

    def write(self) -> Path | None:
        """``trials.csv`` and ``best.yaml`` (when a trial is complete); returns the latter."""
        write_trials_csv(self.optuna, self.study, self.out / TRIALS_CSV)
        best = best_trial(self.optuna, self.study)
        if best is None:
            return None
        text = best_yaml_text(best, self.cfg, self.counted, self.command)
        with atomic_open(self.out / BEST_YAML) as f:
            f.write(text)
        return self.out / BEST_YAML

    def close(self) -> None:
        """Record the study's seconds; close the bars and the TensorBoard writer."""
        self.study.set_user_attr("seconds", round(self.elapsed(), 3))
        for bar in self.bars:
            bar.close()
        if self.writer is not None:
            self.writer.close()


def _run_inline(scheduler: Scheduler, storage: Any) -> None:
    """One trial at a time in this process."""
    while (spec := scheduler.next_spec()) is not None:
        scheduler.done(run_trial(spec, storage, on_steps=scheduler.tick))


def _run_in_processes(scheduler: Scheduler, workers: int) -> None:
    """``workers`` trials at a time in processes that end with this one."""
    running: set[Future[TrialOutcome]] = set()
    with parent_bound_pool(workers) as pool:
        while True:
            while len(running) < workers and (spec := scheduler.next_spec()) is not None:
                running.add(pool.submit(run_trial, spec))
            if not running:
                return
            finished, running = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            scheduler.tick()
            for future in finished:
                scheduler.done(future.result())


def _run_on_ray(scheduler: Scheduler, settings: TuneConfig) -> None:
    """``workers`` trials at a time as Ray tasks of ``cpus_per_run`` CPUs and ``gpus_per_run``
    GPUs. A lost task is not retried: its trial is cut, and the next run trains it again."""
    ray = connect_ray(settings.cluster)
    remote = ray.remote(
        num_cpus=settings.cpus_per_run, num_gpus=settings.gpus_per_run, max_retries=0
    )(run_trial)
    specs: Iterator[TrialSpec] = iter(scheduler.next_spec, None)
    run_tasks(
        ray,
        remote,
        specs,
        lambda spec: (spec,),
        settings.workers,
        lambda _spec, outcome: scheduler.done(outcome),
        describe=lambda spec: f"a trial of {scheduler.out}",
    )


def _claim_folder(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding anything a study does not write; empty it when ``overwrite``."""
    check_ours(out, TUNE_ENTRIES, "worldvae tune study")
    if overwrite:
        remove_owned(out, TUNE_ENTRIES)


def tune(
    cfg: AgentConfig,
    settings: TuneConfig,
    out_dir: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    command: str = "",
) -> TuneResult:
    """Search the hyperparameters of the agent ``cfg`` into the study folder ``out_dir``.

    ``cfg`` is every trial's agent: its ``total_timesteps`` the steps of a trial, its
    ``algo_kwargs`` the base that each trial's sampled values replace (see
    :data:`SEARCH_SPACES`). Re-running with the same ``cfg`` continues the study until it
    holds ``settings.trials`` trials or ``settings.budget_seconds`` are spent, both counted
    over every run. ``command`` is recorded in ``best.yaml``.

    Raises:
        ImportError: Optuna is not installed (the message names the extra).
        ForeignDirError: ``out_dir`` holds files a study does not write.
        RunDirBusyError: another process is writing ``out_dir``.
        ValueError: settings the agent cannot train with, an algorithm without a search
            space, or a study in ``out_dir`` made with other settings.
    """
    optuna = import_optuna()
    space = search_space(cfg.algo, cfg.n_envs, cfg.total_timesteps)
    base = dataclasses.replace(cfg, checkpoint_freq=0)  # a cut trial starts afresh
    check_agent_run(base)
    out = Path(out_dir)
    check_folder(out)
    with RunDirLock(out, "tune"):
        _claim_folder(out, overwrite)
        storage = rdb_storage(optuna, study_url(out))
        try:
            study = open_study(optuna, out, storage, study_settings(base, space))
            requeue_cut_trials(optuna, study, out / TRIALS_DIR)
            return _run_study(optuna, study, storage, base, space, settings, out, progress, command)
        finally:
            storage.engine.dispose()


def _run_study(
    optuna: Any,
    study: Any,
    storage: Any,
    cfg: AgentConfig,
    space: dict[str, Dimension],
    settings: TuneConfig,
    out: Path,
    progress: bool,
    command: str,
) -> TuneResult:
    """Run trials on the chosen workers until the study has its trials or its budget ends."""
    workers, ray = settings.workers, uses_ray(settings.cluster)
    spec = TrialSpec(
        storage=study_url(out),
        config=cfg.to_dict(),
        space=space,
        trials_dir=str(out / TRIALS_DIR),
        sampler_seed=settings.sampler_seed,
        startup_trials=settings.startup_trials,
        warmup_steps=(
            cfg.total_timesteps // 3 if settings.warmup_steps is None else settings.warmup_steps
        ),
        parallel=workers > 1,
        deadline=None,
        threads=max(1, int(settings.cpus_per_run)) if ray else None,
    )
    if workers > 1 and not ray:
        spec = dataclasses.replace(spec, threads=max(1, cpu_cores() // workers))
    scheduler = Scheduler(optuna, study, cfg, settings, out, spec, progress, command)
    try:
        if ray:
            _run_on_ray(scheduler, settings)
        elif workers > 1:
            _run_in_processes(scheduler, workers)
        else:
            _run_inline(scheduler, storage)
    finally:
        scheduler.close()
    best_yaml = scheduler.write()
    title = f"{cfg.env_id}, {cfg.obs}, {cfg.algo.upper()}: {scheduler.counted} trials"
    plot_history(optuna, study, out / HISTORY_PNG, title)
    return _result(optuna, study, out, scheduler, best_yaml)


def _result(
    optuna: Any, study: Any, out: Path, scheduler: Scheduler, best_yaml: Path | None
) -> TuneResult:
    state = optuna.trial.TrialState
    trials = [t for t in study.get_trials(deepcopy=False) if counts(optuna, t)]
    best = best_trial(optuna, study)
    return TuneResult(
        out=out,
        trials=len(trials),
        complete=sum(t.state == state.COMPLETE for t in trials),
        pruned=sum(t.state == state.PRUNED for t in trials),
        failed=sum(t.state == state.FAIL for t in trials),
        seconds=float(study.user_attrs.get("seconds", scheduler.elapsed())),
        best_number=None if best is None else best.number,
        best_value=None if best is None else float(best.value),
        best_yaml=best_yaml,
    )
