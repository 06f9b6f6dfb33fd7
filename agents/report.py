"""The comparison report: report.md, curves.png, results.{csv,json} and the VAE's pictures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from agents.comparison import ComparisonResult
from agents.statistics import curve_band
from worldvae.atomic import atomic_open, atomic_path
from worldvae.versions import library_versions

COLORS = {"pixel": "#1f77b4", "latent": "#d62728", "encoder": "#2ca02c"}


def plot_curves(result: ComparisonResult, path: Path) -> Path:
    """Return against env steps and against training seconds: mean and 95% CI per kind."""
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
            mean, low, high = curve_band([(c[key], c["mean_return"]) for c in curves], grid)
            color = COLORS.get(obs)
            ax.plot(grid, mean, color=color, label=f"{obs} ({len(curves)} seeds)")
            ax.fill_between(grid, low, high, color=color, alpha=0.2)
        ax.axhline(result.random_return, color="grey", ls="--", lw=1, label="random policy")
        ax.set_xlabel(label)
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best")
    fig.suptitle(
        f"{result.config.env_id}, {result.config.algo.upper()}: mean and 95% bootstrap CI over seeds"
    )
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


def verdict(result: ComparisonResult) -> str:
    """One honest sentence: which arm scored higher, whether the intervals separate, speed."""
    s = result.summary
    if "pixel" not in s or "latent" not in s:
        return "Only one observation kind was run; nothing to compare."
    p, lat = s["pixel"], s["latent"]
    separated = lat["iqm_ci"][0] > p["iqm_ci"][1] or p["iqm_ci"][0] > lat["iqm_ci"][1]
    speed = lat["steps_per_second"] / max(p["steps_per_second"], 1e-9)
    better = "latent" if lat["iqm"] > p["iqm"] else "pixel"
    n = p["n_seeds"]
    if separated:
        head = f"The {better} agent scores higher (IQM {s[better]['iqm']:.2f} against {s['pixel' if better == 'latent' else 'latent']['iqm']:.2f}; the 95% intervals do not overlap over {n} seeds)"
    else:
        head = f"At this budget the two agents are not separable (IQM latent {lat['iqm']:.2f} [{lat['iqm_ci'][0]:.2f}, {lat['iqm_ci'][1]:.2f}] against pixel {p['iqm']:.2f} [{p['iqm_ci'][0]:.2f}, {p['iqm_ci'][1]:.2f}], overlapping 95% intervals over {n} seeds)"
    return f"{head}; the latent agent trains at {speed:.2f}x the pixel agent's env-steps/s."


def write_report(
    result: ComparisonResult,
    out_dir: str | Path,
    command: str,
    vae_images: dict[str, Path] | None = None,
) -> Path:
    """Write the report directory; returns the path of ``report.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(result, out / "curves.png")
    for name in ("results.csv", "results.json"):
        if result.out_dir != out:
            shutil.copy2(result.out_dir / name, out / name)
    for name, src in (vae_images or {}).items():
        shutil.copy2(src, out / f"vae_{name}.png")
    cfg = result.config
    s = result.summary
    lines = [
        f"# {cfg.env_id}: pixel versus latent {cfg.algo.upper()}",
        "",
        verdict(result),
        "",
        f"Each agent: {cfg.total_timesteps:,} env steps, seeds {list(cfg.seeds)}, the same hyperparameters; "
        f"final evaluation on {cfg.final_eval_episodes} fixed-seed episodes (deterministic policy). "
        f"A random policy scores {result.random_return:.2f} on them. The threshold for the "
        f"time-to-threshold columns is {result.threshold:.2f} (halfway from random to the best final score unless set). "
        f"The VAE was pretrained on {cfg.vae_frames:,} env frames, counted in the last column.",
        "",
        "| observation | final return (mean +- std) | IQM [95% CI] | AUC (mean return over training) | env-steps/s | steps to threshold | seconds to threshold | steps to threshold incl. VAE frames |"
        + (" zero-shot shifted return |" if cfg.shifted_env_kwargs else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if cfg.shifted_env_kwargs else ""),
    ]
    for obs, v in s.items():
        reach = f" ({v['seeds_reaching_threshold']}/{v['n_seeds']} seeds)"
        row = (
            f"| {obs} | {v['final_mean']:.2f} +- {v['final_std']:.2f} | {v['iqm']:.2f} [{v['iqm_ci'][0]:.2f}, {v['iqm_ci'][1]:.2f}] "
            f"| {v['auc']:.2f} | {v['steps_per_second']:.0f} | {_fmt(v['steps_to_threshold'], 0)}{reach} "
            f"| {_fmt(v['seconds_to_threshold'], 1)} | {_fmt(v['steps_to_threshold_with_pretraining'], 0)} |"
        )
        if cfg.shifted_env_kwargs:
            row += f" {v.get('shifted_mean', float('nan')):.2f} |"
        lines.append(row)
    lines += [
        "",
        "![learning curves](curves.png)",
        "",
        "Medians over the seeds that reached the threshold. Per-run numbers: `results.csv`, `results.json`.",
    ]
    if vae_images:
        lines += ["", "## The VAE", ""] + [f"![{n}](vae_{n}.png)" for n in vae_images]
    versions = library_versions()
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        command,
        "```",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        "",
    ]
    with atomic_open(out / "report.md") as f:
        f.write("\n".join(lines))
    return out / "report.md"
