"""World Models' recipe after V and M: C trained on ``[z, h]`` by each method of the
pipeline's ``controllers`` stage, every driver scored on the canonical tracks, and the dream
scored against the real env.

The drivers are the comparison's best PPO policy on ``z`` (V) and on ``[z, h]`` (V + M), and
each controller of ``controllers.kinds`` (:data:`~agents.controller.kinds.CONTROLLER_KINDS`):
CMA-ES on a linear C, CMA-ES on a C with one hidden layer, C trained only inside M's dream.
Every one is chosen on the tracks from its evaluation seed and scored on the canonical
stage's tracks (:func:`agents.canonical.score_drivers`). Each ``[z, h]`` driver is also played
inside M's dream on as many episodes, so the report shows how much the dream flatters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from agents.agent_config import AgentConfig, resolve_config
from agents.agent_training import OtherSettingsError, bundle_env, train_agent
from agents.bundle import load_bundle, policy_sha256, read_agent_info
from agents.canonical import FIELD_MARKS, Chosen, best_of_arm, score_drivers
from agents.comparison import ComparisonResult
from agents.controller.cmaes import BEST_CONTROLLER_FILE, CHOICE_SEED_OFFSET
from agents.controller.kinds import CONTROLLER_KINDS, ControllerKind
from agents.environments import evaluate_policy_seeded
from agents.evaluation import evaluate_bundle
from agents.presets import CanonicalStage, ControllerStage
from envs.cluster import uses_ray
from worldvae.atomic import write_json
from worldvae.envspec import EnvSpec
from worldvae.vae.io import model_sha256

logger = logging.getLogger(__name__)

# The comparison's arms that are drivers of the World Models table, and their rows' names.
PPO_DRIVERS = {"latent": "V: PPO on z", "latent+h": "V + M: PPO on [z, h]"}


def controller_config(
    kind: ControllerKind,
    stage: ControllerStage,
    env: EnvSpec,
    vae: Path,
    memory: Path,
    cluster: str = "local",
    dream_members: Sequence[Path] = (),
) -> AgentConfig:
    """The agent config of one controller of ``stage``: ``[z, h]`` observations of V and M,
    the kind's algorithm (CMA-ES with the stage's population, rollouts, step size, workers,
    hidden layer and shortlist; in the dream its own population and rollouts, scored batched on this
    machine, on Ray actors with a cluster; or PPO with the env's hyperparameters), in the
    dream (with the other Ms of ``dream_members`` and the stage's disagreement penalty) or
    the real env."""
    overrides: dict[str, Any] = {}
    if kind.algo == "cmaes":
        overrides = {
            "popsize": stage.popsize,
            "rollouts": stage.rollouts,
            "sigma0": stage.sigma0,
            "workers": stage.workers,
            "cluster": cluster,
        }
        if kind.hidden:
            overrides["hidden"] = stage.hidden
        if stage.shortlist:
            overrides |= {
                "shortlist": stage.shortlist,
                "shortlist_episodes": stage.shortlist_episodes,
            }
        if kind.dream:
            overrides["popsize"] = stage.dream_popsize or stage.popsize
            overrides["rollouts"] = stage.dream_rollouts or stage.rollouts
            if not uses_ray(cluster):  # one batched M step for every rollout of a generation
                overrides |= {"batched": True, "batch_envs": stage.dream_batch_envs}
    return resolve_config(
        env.env_id,
        "latent+h",
        kind.algo,
        str(vae),
        stage.dream_timesteps if kind.dream else stage.total_timesteps,
        stage.seed,
        overrides=overrides,
        env_given=env.options(),
        memory_dir=str(memory),
        dream=kind.dream,
        dream_temperature=stage.temperature,
        dream_ensemble=tuple(str(m) for m in dream_members) if kind.dream else (),
        dream_penalty=stage.dream_penalty if kind.dream and dream_members else 0.0,
        eval_freq=stage.dream_eval_freq if kind.dream else stage.eval_freq,
        eval_episodes=stage.eval_episodes,
        eval_seed=stage.eval_seed,
        max_train_seconds=stage.max_train_seconds,
    )


def train_controllers(
    stage: ControllerStage,
    env: EnvSpec,
    vae: Path,
    memory: Path,
    out: Path,
    cluster: str = "local",
    progress: bool = True,
    dream_members: Sequence[Path] = (),
) -> dict[str, Path]:
    """Train every controller of ``stage.kinds`` into ``out/KIND`` in turn (a finished one is
    kept, an unfinished one continues from its checkpoint; a dream-trained one dreams with
    the other Ms of ``dream_members``); return kind -> bundle."""
    bundles = {}
    for name in stage.kinds:
        check_same_memory(out / name, memory)
        kind = CONTROLLER_KINDS[name]
        if kind.dream and len(dream_members) != stage.dream_members:
            raise ValueError(
                f"controllers.dream_members is {stage.dream_members} but {len(dream_members)} "
                "other Ms were given for the dream"
            )
        cfg = controller_config(kind, stage, env, vae, memory, cluster, dream_members)
        check_same_dream(out / name, cfg)
        try:
            result = train_agent(cfg, out / name, skip_complete=True, progress=progress)
        except OtherSettingsError as e:  # the pipeline has no --overwrite to offer
            raise ValueError(
                f"the controller {out / name} is an unfinished run of other settings (a "
                f"controllers setting or the preset changed since it started); remove "
                f"{out / name} to train it again with these, or set the settings back"
            ) from e
        logger.info(
            "controller %s: %.1f in its last evaluation, %.0f s",
            name,
            result.final_mean_return,
            result.train_seconds,
        )
        bundles[name] = out / name
    return bundles


def check_same_memory(bundle: Path, memory: Path) -> None:
    """Refuse a finished controller at ``bundle`` that was trained with another M than
    ``memory`` (a second round turned on or off after the controllers were trained).

    Raises:
        ValueError: naming the controller and the fix.
    """
    info_file = bundle / "config.json"
    if not info_file.is_file():
        return
    info = json.loads(info_file.read_text())
    if info.get("status") != "complete" or "memory_sha256" not in info:
        return
    if info["memory_sha256"] != model_sha256(memory):
        raise ValueError(
            f"the controller {bundle} was trained with another M than {memory}; remove "
            f"{bundle} to train it with this M, or set back the setting that changed M "
            "(controllers.second_round_frames)"
        )


def check_same_dream(bundle: Path, cfg: AgentConfig) -> None:
    """Refuse a finished controller at ``bundle`` that was trained in another dream than
    ``cfg``'s, or by another population (other Ms beside M, another penalty, tau, population
    or rollouts: controllers.dream_members, dream_penalty, temperature, dream_popsize or
    dream_rollouts changed after it was trained).

    Raises:
        ValueError: naming the controller, what differs and the fix.
    """
    info_file = bundle / "config.json"
    if not cfg.dream or not info_file.is_file():
        return
    info = json.loads(info_file.read_text())
    if info.get("status") != "complete":
        return
    was = AgentConfig.from_dict(info["agent"])
    members = [model_sha256(m) for m in cfg.dream_ensemble]

    def population(c: AgentConfig) -> tuple[Any, Any]:
        return c.algo_kwargs.get("popsize"), c.algo_kwargs.get("rollouts")

    differs = [
        what
        for what, same in (
            ("its Ms", members == list(info.get("dream_ensemble_sha256", []))),
            ("the penalty", was.dream_penalty == cfg.dream_penalty),
            ("tau", was.dream_temperature == cfg.dream_temperature),
            ("its population or rollouts", population(was) == population(cfg)),
        )
        if not same
    ]
    if differs:
        raise ValueError(
            f"the controller {bundle} was trained in another dream ({', '.join(differs)}); "
            f"remove {bundle} to train it in this one, or set back controllers.dream_members, "
            "dream_penalty, temperature, dream_popsize or dream_rollouts"
        )


@dataclass(frozen=True)
class Driver:
    """One row of the World Models table: the chosen policy and how it was trained."""

    name: str
    title: str
    chosen: Chosen
    dream: bool  # trained inside M's dream
    steps: int  # env steps of training, real or dreamed
    seconds: float  # training wall-clock, evaluation excluded


def drivers_of(
    result: ComparisonResult,
    controllers: dict[str, Path],
    sampled: bool = False,
    choose: Callable[[str, Chosen], Chosen] | None = None,
) -> list[Driver]:
    """The comparison's best latent and latent+h policies, then the controllers.

    With ``sampled`` each PPO policy is also played with sampled actions: as a second driver
    ``ppo-OBS-sampled``, or, given ``choose`` (driver name, mode-action policy -> the policy
    played the better way, see :func:`choose_actions`), as the one way chosen."""
    found = []
    for obs, title in PPO_DRIVERS.items():
        chosen = best_of_arm(result, obs)
        if chosen is None:
            continue
        name = f"ppo-{obs}"
        if sampled and choose is not None:
            way = choose(name, chosen)
            found.append(_driver(name, title + (", sampled actions" if way.sampled else ""), way))
            continue
        found.append(_driver(name, title, chosen))
        if sampled:
            again = replace(chosen, sampled=True)
            found.append(_driver(f"{name}-sampled", f"{title}, sampled actions", again))
    for name, bundle in controllers.items():
        found.append(_driver(name, controller_title(name, bundle), chosen_controller(bundle)))
    return found


def controller_title(name: str, bundle: Path) -> str:
    """The kind's title, with the dream's other Ms and penalty where it dreamt with them."""
    agent = read_agent_info(bundle)["agent"]
    members = len(agent.get("dream_ensemble") or ())
    if not members:
        return CONTROLLER_KINDS[name].title
    penalty = agent.get("dream_penalty") or 0.0
    return f"{CONTROLLER_KINDS[name].title}, {members + 1} Ms" + (
        f", disagreement penalty {penalty:g}" if penalty else ""
    )


def chosen_controller(bundle: Path) -> Chosen:
    """A CMA-ES controller as chosen on its evaluation tracks: the mean candidate of its best
    periodic evaluation, or with a shortlist the one of its best evaluations that did best on
    the shortlist's tracks (``best_controller.safetensors``, its step ``best_step``), or its
    final one where the bundle kept no best (trained before it was kept)."""
    info = json.loads((bundle / "config.json").read_text())
    if (bundle / BEST_CONTROLLER_FILE).is_file() and "best_step" in info:
        return Chosen(bundle, "best", int(info["best_step"]))
    return Chosen(bundle, "final", int(info["steps"]))


def _driver(name: str, title: str, chosen: Chosen) -> Driver:
    info = json.loads((chosen.bundle / "config.json").read_text())
    steps = int(info["steps"])
    return Driver(
        name,
        title,
        chosen if chosen.which == "best" else replace(chosen, step=chosen.step or steps),
        bool(info["agent"].get("dream")),
        steps,
        float(info["train_seconds"]),
    )


def choose_actions(name: str, chosen: Chosen, settings: CanonicalStage, path: Path) -> Chosen:
    """``chosen`` played the better way, by its mode action or with sampled actions, as
    measured on ``settings.choose_on`` tracks of the env it trained on from its evaluation
    seed + :data:`CHOICE_SEED_OFFSET` (neither the tracks its checkpoint was chosen on nor the
    canonical ones; after those of its shortlist where it had one, whose best mode score
    there would favour the mode); a tie keeps the mode. Both means are kept in ``path``
    (JSON, per driver ``name``) and reused while the policy, the tracks and their number are
    the same."""
    kept = json.loads(path.read_text()) if path.exists() else {}
    info = read_agent_info(chosen.bundle)
    seed = int(info["agent"]["eval_seed"]) + CHOICE_SEED_OFFSET
    shortlist = info.get("choice") or {}
    if chosen.which == "best" and shortlist.get("seed") == seed:
        seed += int(shortlist["episodes"])
    key = {
        "run": chosen.bundle.name,
        "which": chosen.which,
        "step": chosen.step,
        "policy_sha256": policy_sha256(chosen.bundle, chosen.which),
        "tracks": settings.choose_on,
        "seed": seed,
    }
    entry = kept.get(name, {})
    if {k: entry.get(k) for k in key} != key:
        means = {}
        for way, deterministic in (("mode", None), ("sampled", False)):
            returns = evaluate_bundle(
                chosen.bundle,
                settings.choose_on,
                seed,
                device="cpu",
                deterministic=deterministic,
                workers=settings.workers,
                which=chosen.which,
            ).returns
            means[way] = float(returns.mean())
        entry = key | means
        kept[name] = entry
        write_json(path, kept)
    logger.info(
        "%s: mode %.1f, sampled %.1f on %d tracks from %d",
        name,
        entry["mode"],
        entry["sampled"],
        entry["tracks"],
        entry["seed"],
    )
    return replace(chosen, sampled=entry["sampled"] > entry["mode"])


def dream_returns(chosen: Chosen, n_episodes: int, seed: int) -> np.ndarray:
    """Returns ``(n_episodes,)`` of a ``[z, h]`` driver played inside its M's dream (at the
    temperature it records, else M's; M alone, without the other Ms or the penalty a
    dream-trained C may have trained with), episodes seeded ``seed + i``, its actions sampled
    when ``chosen.sampled``."""
    bundle = load_bundle(chosen.bundle, device="cpu", which=chosen.which)
    # M's own dream for every driver, a dream-trained C's other Ms and penalty left out: the
    # column says how much M flatters, the same way for each row
    cfg = replace(bundle.config, dream_ensemble=(), dream_penalty=0.0)
    spec = {"cfg": cfg.to_dict(), "bundle": str(chosen.bundle), "dream": True}
    venv = bundle_env(spec)
    deterministic = bundle.config.deterministic_eval and not chosen.sampled
    try:
        return evaluate_policy_seeded(bundle.agent, venv, n_episodes, seed, deterministic)
    finally:
        venv.close()


def score_world_models(
    result: ComparisonResult,
    controllers: dict[str, Path],
    out: Path,
    settings: CanonicalStage,
    dream_episodes: int = 20,
) -> str:
    """Score every driver on the canonical tracks (``out/drivers.json``) and each ``[z, h]``
    driver in M's dream (``out/dream.json``); return the report's section. With
    ``settings.sampled`` and ``settings.choose_on`` each PPO driver is scored one way only,
    chosen by :func:`choose_actions` (``out/actions.json``)."""
    choices = out / "actions.json"
    choose: Callable[[str, Chosen], Chosen] | None = None
    if settings.sampled and settings.choose_on:
        out.mkdir(parents=True, exist_ok=True)
        choose = partial(choose_actions, settings=settings, path=choices)
    drivers = drivers_of(result, controllers, settings.sampled, choose)
    scores = score_drivers({d.name: d.chosen for d in drivers}, out / "drivers.json", settings)
    dream_path = out / "dream.json"
    dreamed = json.loads(dream_path.read_text()) if dream_path.exists() else {}
    for d in drivers:
        key = f"{d.name}:{d.chosen.bundle.name}:{d.chosen.which}:{d.chosen.step}"
        key += ":sampled" if d.chosen.sampled else ""
        key += f":{policy_sha256(d.chosen.bundle, d.chosen.which)}"
        no_memory = d.name in ("ppo-latent", "ppo-latent-sampled")  # PPO on z: no M to dream
        if no_memory or dreamed.get(d.name, {}).get("key") == key:
            continue
        returns = dream_returns(d.chosen, dream_episodes, settings.seed)
        dreamed[d.name] = {"key": key, "mean": float(returns.mean()), "std": float(returns.std())}
        write_json(dream_path, dreamed)
    chose = json.loads(choices.read_text()) if choose and choices.exists() else {}
    return world_models_section(drivers, scores, dreamed, settings, chose)


def world_models_section(
    drivers: list[Driver],
    scores: dict[str, dict[str, Any]],
    dreamed: dict[str, Any],
    settings: CanonicalStage,
    chose: dict[str, Any] | None = None,
) -> str:
    """The report's Markdown table: every driver's canonical score beside its training, and
    how each PPO driver's way of acting was chosen (``chose``, see :func:`choose_actions`)."""
    backend = "gymnasium" if "gymnasium" in settings.backends else settings.backends[0]
    rows = []
    for d in drivers:
        s = scores[d.name][backend]
        real, dream = (0, d.steps) if d.dream else (d.steps, 0)
        in_dream = dreamed.get(d.name)
        dream_text = f"{in_dream['mean']:.1f} +- {in_dream['std']:.1f}" if in_dream else "-"
        rows.append(
            f"| {d.title} | `{d.chosen.bundle.name}` ({d.chosen.which}, step {d.chosen.step:,}) "
            f"| {real:,} | {dream:,} | "
            f"{d.seconds / 60:.1f} min | {len(s['returns'])} | {s['mean']:.1f} +- "
            f"{s['std']:.1f} | {min(s['returns']):.1f} | {dream_text} |"
        )
    return "\n".join(
        [
            f"## World Models: every driver on up to {settings.episodes} tracks",
            "",
            f"Each policy's mode action unless the row says sampled (gSDE's noise resampled as in "
            f"training), {backend} track seeds from {settings.seed} (no driver was chosen on "
            "them); real and dreamed env steps of training; the last column is the same "
            "driver's return inside M's dream (how much the dream flatters). Fewer tracks than "
            "asked means the stage's time budget ran out.",
            "",
            "| driver | policy | real env steps | dream steps | training | tracks | "
            "mean return +- std | min | in M's dream |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *_choice_lines(drivers, chose or {}),
            f"For reference, over 100 tracks: {FIELD_MARKS}; solved is 900.",
        ]
    )


def _choice_lines(drivers: list[Driver], chose: dict[str, Any]) -> list[str]:
    """The report's lines on how the PPO drivers' way of acting was chosen (none without)."""
    lines = []
    for d in drivers:
        c = chose.get(d.name)
        if c is None:
            continue
        way = "sampled actions" if d.chosen.sampled else "its mode action"
        lines.append(
            f"- `{d.name}` plays {way}: {c['mode']:.1f} by its mode, {c['sampled']:.1f} "
            f"sampled, on {c['tracks']} tracks of its training env from {c['seed']}"
        )
    if not lines:
        return []
    return [
        "Each PPO driver was scored one way only, the better on other tracks than these:",
        "",
        *lines,
        "",
    ]
