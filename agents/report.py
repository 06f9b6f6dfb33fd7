"""The comparison report: report.md, curves.png, profiles.png, results.{csv,json}, VAE pictures.

Every arm is plotted and tabulated. Curves are sample-efficiency curves (IQM over runs at each
point, with a 95% bootstrap band); ``profiles.png`` holds the performance profiles of the final
returns; the table gives IQMs with stratified-bootstrap CIs and the probability of improvement
over the pixel arm (Agarwal et al. 2021). On request the report embeds animated GIFs: the best
agent playing one episode of gymnasium's env (``best_agent.gif``) and M's open-loop dream beside
the real frames (``m_dream.gif``).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from agents.comparison import ComparisonResult, best_policy, improvements
from agents.evaluation import VideoOptions, record_episode_video
from agents.statistics import performance_profile_band, sample_efficiency_curve
from worldvae.atomic import atomic_open, atomic_path, write_json
from worldvae.versions import library_versions

logger = logging.getLogger(__name__)

BEST_AGENT_GIF = "best_agent.gif"
DREAM_GIF = "m_dream.gif"
# A GIF of a few MB at most: 200 pixels wide, one frame in two, at most 300 frames (a
# CarRacing-v3 episode at frame skip 2 is 500 agent steps, so 250 frames).
REPORT_VIDEO = VideoOptions(width=200, every=2, max_frames=300)

COLORS = {
    "pixel": "#1f77b4",
    "latent": "#d62728",
    "encoder": "#2ca02c",
    "random": "#7f7f7f",
    "pca": "#9467bd",
    "state": "#ff7f0e",
}
AXES = {
    "final return": ("iqm", "iqm_ci"),
    "steps to threshold": ("steps_to_threshold_iqm", "steps_to_threshold_iqm_ci"),
    "seconds to threshold": ("seconds_to_threshold_iqm", "seconds_to_threshold_iqm_ci"),
}


def plot_curves(result: ComparisonResult, path: Path) -> Path:
    """IQM return against env steps and against training seconds, with 95% CIs, per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, key, label in (
        (axes[0], "steps", "env steps"),
        (axes[1], "seconds", "training wall-clock (s)"),
    ):
        for obs, curves in result.curves.items():
            end = min(c[key][-1] for c in curves)
            grid = np.linspace(0, end, 100)
            ys = np.stack([np.interp(grid, c[key], c["mean_return"]) for c in curves])
            mid, low, high = sample_efficiency_curve(ys)
            color = COLORS.get(obs)
            ax.plot(grid, mid, color=color, label=f"{obs} ({len(curves)} seeds)")
            ax.fill_between(grid, low, high, color=color, alpha=0.15)
        ax.axhline(result.random_return, color="black", ls=":", lw=1, label="random policy")
        ax.axhline(result.threshold, color="grey", ls="--", lw=0.8, label="threshold")
        ax.set_xlabel(label)
        ax.set_ylabel("evaluation return (IQM over seeds)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(
        f"{result.config.env_id}, {result.config.algo.upper()}: IQM and 95% bootstrap CI over seeds"
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_profiles(result: ComparisonResult, path: Path) -> Path:
    """Performance profiles of the final returns: fraction of runs above each score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finals = {
        obs: np.array([r["final_return_mean"] for r in result.runs if r["obs"] == obs])
        for obs in result.config.obs_kinds
    }
    lo = min(min(v.min() for v in finals.values()), result.random_return)
    hi = max(v.max() for v in finals.values())
    taus = np.linspace(lo - 0.02 * abs(hi - lo), hi + 0.02 * abs(hi - lo), 200)
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for obs, scores in finals.items():
        prof, low, high = performance_profile_band(scores, taus)
        ax.plot(taus, prof, color=COLORS.get(obs), label=obs)
        ax.fill_between(taus, low, high, color=COLORS.get(obs), alpha=0.12)
    ax.axvline(result.random_return, color="black", ls=":", lw=1, label="random policy")
    ax.set_xlabel("final return tau")
    ax.set_ylabel("fraction of runs with return > tau")
    ax.set_title(f"{result.config.env_id}: performance profiles (95% CI)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "not reached"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _interval(v: dict[str, Any], key: str, digits: int = 2) -> str:
    mid, (low, high) = v[key], v[f"{key}_ci"]
    return f"{mid:,.{digits}f} [{low:,.{digits}f}, {high:,.{digits}f}]"


def separations(result: ComparisonResult, a: str = "latent", b: str = "pixel") -> dict[str, str]:
    """For each axis (final return, steps and seconds to threshold): which arm's 95% CI lies
    wholly on the better side of the other's, or ``""`` when no arm's does.

    A seed that never reached the threshold counts as what it trained, a lower bound on its
    time, so an arm's time interval is exact when every seed reached the threshold and a lower
    bound otherwise. An arm is called faster only when all its seeds reached the threshold and
    its interval ends below the start of the other's: the other arm's censored seeds can only
    move that start later, so the claim holds whatever they would have taken.
    """
    s = result.summary
    if a not in s or b not in s:
        return {}

    def timed(arm: str) -> bool:
        return bool(s[arm]["seeds_reaching_threshold"] == s[arm]["n_seeds"])

    out = {}
    for axis, (_, ci) in AXES.items():
        (a_lo, a_hi), (b_lo, b_hi) = s[a][ci], s[b][ci]
        if axis == "final return":
            out[axis] = a if a_lo > b_hi else b if b_lo > a_hi else ""
        elif timed(a) and a_hi < b_lo:
            out[axis] = a
        elif timed(b) and b_hi < a_lo:
            out[axis] = b
        else:
            out[axis] = ""
    return out


def verdict(result: ComparisonResult) -> str:
    """Honest sentences: which arm scored higher, on which axes the intervals separate, speed."""
    s = result.summary
    if "pixel" not in s or "latent" not in s:
        return "The pixel or the latent arm was not run; no pixel-versus-latent verdict."
    p, lat = s["pixel"], s["latent"]
    if min(p["n_seeds"], lat["n_seeds"]) < 2:
        return "One seed per arm gives no interval: no pixel-versus-latent verdict."
    sep = separations(result)
    won = {axis: arm for axis, arm in sep.items() if arm}
    n = p["n_seeds"]
    speed = lat["steps_per_second"] / max(p["steps_per_second"], 1e-9)
    if won:
        parts = [f"{arm} on {axis}" for axis, arm in won.items()]
        head = (
            f"Latent and pixel separate (non-overlapping 95% CIs over {n} seeds): better is "
            + "; ".join(parts)
        )
    else:
        head = (
            f"At this budget latent and pixel are not separable on final return or time to "
            f"threshold (overlapping 95% CIs over {n} seeds, or the faster arm's seeds did not "
            f"all reach the threshold; final IQM latent "
            f"{_interval(lat, 'iqm')} against pixel {_interval(p, 'iqm')})"
        )
    poi = result.improvement.get("latent")
    tail = ""
    if poi:
        tail = (
            f" P(latent > pixel) = {poi['probability']:.2f} "
            f"[{poi['ci'][0]:.2f}, {poi['ci'][1]:.2f}]."
        )
    return f"{head}. The latent agent trains at {speed:.2f}x the pixel agent's env-steps/s.{tail}"


CONTROL_ARMS = ("random", "pca")  # codes of V's size that no VAE training shaped


def controls_verdict(result: ComparisonResult) -> str:
    """Whether training the VAE mattered: ``P(latent > control)`` on the final return with its
    95% CI, and the final IQMs, for each control arm run beside ``latent``; empty without
    one."""
    controls = [c for c in CONTROL_ARMS if c in result.summary]
    if "latent" not in result.summary or not controls:
        return ""
    parts = []
    for control in controls:
        poi = improvements(result.runs, ("latent", control), baseline=control)["latent"]
        parts.append(
            f"P(latent > {control}) = {poi['probability']:.2f} "
            f"[{poi['ci'][0]:.2f}, {poi['ci'][1]:.2f}]"
        )
    iqms = ", ".join(
        f"{arm} {_interval(result.summary[arm], 'iqm')}" for arm in ("latent", *controls)
    )
    return (
        "Does training the VAE matter? Against the controls of the same code size at the same "
        f"budget: {'; '.join(parts)}; final IQM {iqms}."
    )


def _probe_lines(probes: dict[str, Any]) -> list[str]:
    if not probes or not probes.get("r2"):
        return [
            "No probe: the dataset holds no env states (collect with `--record-state`).",
        ]
    names = probes["state_names"]
    lines = [
        f"R^2 of a ridge regression from each arm's code to the env's true state, fitted on "
        f"{probes['n_train']:,} frames of the training episodes and scored on {probes['n_test']:,} "
        "frames of held-out episodes (1 = the factor is a linear function of the code).",
        "",
        "| code | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for arm, r2 in probes["r2"].items():
        cells = ["n/a" if r2[n] is None else f"{r2[n]:.2f}" for n in names]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _copy_artifacts(
    result: ComparisonResult, out: Path, vae_images: dict[str, Path] | None
) -> None:
    """Draw the plots into ``out`` and copy the per-run results and the VAE's pictures there."""
    plot_curves(result, out / "curves.png")
    plot_profiles(result, out / "profiles.png")
    for name in ("results.csv", "results.json"):
        if result.out_dir != out:
            shutil.copy2(result.out_dir / name, out / name)
    for name, src in (vae_images or {}).items():
        shutil.copy2(src, out / f"vae_{name}.png")


def _intro_lines(result: ComparisonResult) -> list[str]:
    """The title, the verdict, and what every agent was given (budget, seeds, evaluation)."""
    cfg = result.config
    n_seeds = len(cfg.seeds)
    mode = "deterministic (mode action)" if cfg.deterministic_eval else "stochastic (sampled)"
    budget = (
        f"{cfg.max_train_seconds:,.0f} s of training wall-clock (at most {cfg.total_timesteps:,} env steps)"
        if cfg.max_train_seconds
        else f"{cfg.total_timesteps:,} env steps"
    )
    controls = controls_verdict(result)
    lines = [
        f"# {cfg.env_id}: {', '.join(cfg.obs_kinds)} ({cfg.algo.upper()})",
        "",
        verdict(result),
        "",
        *([controls, ""] if controls else []),
        f"Each agent: {budget}, seeds {list(cfg.seeds)}, the same "
        f"hyperparameters; every arm is evaluated on the same {cfg.final_eval_episodes} "
        f"fixed-seed episodes (seeds {cfg.eval_seed}..{cfg.eval_seed + cfg.final_eval_episodes - 1}), "
        f"policy {mode}. A random policy scores {result.random_return:.2f} on them. The "
        f"threshold is {result.threshold:.2f} (halfway from random to the best final score "
        "unless set); the evaluation before training (step 0) never counts as reaching it. "
        f"The VAE was pretrained on {cfg.vae_frames:,} env frames, counted in the last column "
        "for the arms that use an encoder.",
        "",
    ]
    if n_seeds < 4:
        lines += [
            f"**With {n_seeds} seeds the IQM is the plain mean**: a 25% trim of {n_seeds} runs "
            "removes none. Use 5 or more seeds for the IQM to mean anything.",
            "",
        ]
    return lines


def _arm_row(obs: str, v: dict[str, Any], poi: dict[str, Any] | None) -> str:
    """One arm's row of the results table."""
    poi_cell = f"{poi['probability']:.2f} [{poi['ci'][0]:.2f}, {poi['ci'][1]:.2f}]" if poi else "-"
    return (
        f"| {obs} | {v['final_mean']:.2f} +- {v['final_std']:.2f} | {_interval(v, 'iqm')} "
        f"| {poi_cell} | {v['auc']:.2f} | {v['steps_per_second']:.0f} "
        f"| {_fmt(v['steps_to_threshold'], 0)} ({v['seeds_reaching_threshold']}/{v['n_seeds']}) "
        f"| {_interval(v, 'steps_to_threshold_iqm', 0)} "
        f"| {_interval(v, 'seconds_to_threshold_iqm', 1)} "
        f"| {_fmt(v['steps_to_threshold_with_pretraining'], 0)} |"
    )


def _results_table(result: ComparisonResult) -> list[str]:
    """The table of every arm, then the zero-shot shifted returns when a shift was evaluated."""
    s = result.summary
    lines = [
        "| arm | final return (mean +- std) | IQM [95% CI] | P(arm > pixel) [95% CI] | AUC | "
        "env-steps/s | steps to threshold (median, seeds) | steps to threshold, IQM [95% CI] | "
        "seconds to threshold, IQM [95% CI] | steps incl. VAE frames |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_arm_row(obs, v, result.improvement.get(obs)) for obs, v in s.items()]
    shifted = result.config.shifted_env_kwargs
    if shifted:
        lines += ["", f"Mean zero-shot shifted return (env kwargs {shifted}):", ""]
        lines += [f"- {obs}: {v.get('shifted_mean', float('nan')):.2f}" for obs, v in s.items()]
    return lines


def _figure_lines(result: ComparisonResult) -> list[str]:
    """How to read the table, the two figures, and the linear probes of the codes."""
    return [
        "",
        "Steps and seconds to threshold, IQM: a seed that never reached the threshold counts as "
        "the steps and seconds it trained (a lower bound), so an arm is called faster only when "
        "all its seeds reached it. P(arm > pixel): the probability that a run of the arm "
        "ends with a higher return than a run of the pixel arm (ties count one half). Per-run "
        "numbers: `results.csv`, `results.json`.",
        "",
        "![sample-efficiency curves](curves.png)",
        "",
        "![performance profiles](profiles.png)",
        "",
        "## What the codes hold: linear probes",
        "",
        *_probe_lines(result.probes),
    ]


def _stage_time_lines(
    stage_times: dict[str, float] | None, timings: dict[str, float], invocations: int
) -> list[str]:
    """The wall-clock of each stage (the command's, then the comparison's own), if any."""
    if not (stage_times or timings):
        return []
    lines = ["", "## Stage times", ""]
    if invocations > 1:
        lines += [f"Summed over the {invocations} invocations of the command (it resumes).", ""]
    for stage, secs in (stage_times or {}).items():
        lines.append(f"- {stage}: {secs:,.0f} s")
    for stage, secs in timings.items():
        lines.append(f"- compare / {stage}: {secs:,.0f} s")
    return lines


def _reproduce_lines(command: str, machine: str | None) -> list[str]:
    """The command that made the report, the machine it ran on, and the library versions."""
    versions = library_versions()
    lines = ["", "## Reproduce", "", "```", command, "```", ""]
    if machine:
        lines += [f"Machine: {machine}", ""]
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())), ""]
    return lines


def best_agent_video(result: ComparisonResult, out: Path) -> list[str]:
    """Film the comparison's best policy (:func:`~agents.comparison.best_policy` over every
    run) playing gymnasium's env from the evaluation seed into ``out/best_agent.gif``; return
    the report's section. The film is kept, and reused while the same policy is the best
    (``best_agent.json``); a policy that cannot be filmed gets a line saying why."""
    if not result.runs:
        return []
    runs_dir, seed, env_id = result.out_dir / "runs", result.config.eval_seed, result.config.env_id
    run, which, step = best_policy(runs_dir, [r["run"] for r in result.runs])
    key = {"run": run, "which": which, "step": step, "seed": seed, "backend": "gymnasium"}
    record = out / "best_agent.json"
    done = json.loads(record.read_text()) if record.is_file() else {}
    head = ["", "## The best agent at play", ""]
    if {k: done.get(k) for k in key} != key or not (out / BEST_AGENT_GIF).is_file():
        try:
            clip = record_episode_video(
                runs_dir / run,
                out / BEST_AGENT_GIF,
                seed,
                which=which,
                backend="gymnasium",
                options=REPORT_VIDEO,
            )
        except (ValueError, ImportError, OSError) as e:
            logger.warning("no video of the best agent %s: %s", run, e)
            return [*head, f"No video of `{run}`: {e}"]
        done = key | {"return": clip.episode_return, "frames": clip.n_frames}
        write_json(record, done)
    policy = (
        f"the policy of its best evaluation (step {step:,})"
        if which == "best"
        else "its final policy"
    )
    return [
        *head,
        f"![the best agent playing {env_id}]({BEST_AGENT_GIF})",
        "",
        f"`{run}`, {policy}, on gymnasium's {env_id} from seed {seed}: return "
        f"{done['return']:.1f} (one frame in {REPORT_VIDEO.every}, {REPORT_VIDEO.width} "
        "pixels wide).",
    ]


def _dream_lines(dream_gif: Path | None, out: Path) -> list[str]:
    """M's dream beside the real frames (its run's ``images/dream.gif``), copied into ``out``."""
    if dream_gif is None or not dream_gif.is_file():
        return []
    shutil.copy2(dream_gif, out / DREAM_GIF)
    return [
        "",
        "## M's dream",
        "",
        f"![M's open-loop dream beside the real frames]({DREAM_GIF})",
        "",
        "Left, a held-out episode as V reconstructs it; right, M dreaming it open-loop from its "
        "first frame under the same actions. Where they part, M's predictions drift.",
    ]


def write_report(
    result: ComparisonResult,
    out_dir: str | Path,
    command: str,
    vae_images: dict[str, Path] | None = None,
    stage_times: dict[str, float] | None = None,
    machine: str | None = None,
    extra_sections: list[str] | None = None,
    invocations: int = 1,
    video: bool = False,
    dream_gif: Path | None = None,
) -> Path:
    """Write the report directory; returns the path of ``report.md``.

    ``extra_sections`` (Markdown) go after the VAE's pictures, before the command;
    ``invocations`` > 1 says the stage times are sums over a resumed command's runs.
    ``video`` embeds a GIF of the best agent playing (:func:`best_agent_video`);
    ``dream_gif`` (M's ``images/dream.gif``) embeds M's dream beside the real frames.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _copy_artifacts(result, out, vae_images)
    lines = _intro_lines(result) + _results_table(result) + _figure_lines(result)
    if video:
        lines += best_agent_video(result, out)
    if vae_images:
        lines += ["", "## The VAE", ""] + [f"![{n}](vae_{n}.png)" for n in vae_images]
    lines += _dream_lines(dream_gif, out)
    lines += _stage_time_lines(stage_times, result.timings, invocations)
    for section in extra_sections or []:
        lines += ["", section]
    lines += _reproduce_lines(command, machine)
    with atomic_open(out / "report.md") as f:
        f.write("\n".join(lines))
    return out / "report.md"
