"""The representation sweep's report: a table, CSV/JSON, label-efficiency curves, traversals.

``report.md`` ranks the members on each score beside the controls, and gives the Spearman rank
correlation between every cheap score and the downstream return across members: which score
predicts return on this game.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from worldvae.atomic import atomic_open, atomic_path, write_json
from worldvae.metrics import spearman
from worldvae.versions import library_versions

# (key, column title, higher is better); probes are added per label budget.
SCORES: tuple[tuple[str, str, bool], ...] = (
    ("recon", "recon (nats)", False),
    ("kl", "KL (nats)", False),
    ("active_units", "active units", True),
    ("mig", "MIG", True),
    ("dci_disentanglement", "DCI D", True),
    ("dci_completeness", "DCI C", True),
    ("dci_informativeness", "DCI I", True),
    ("anomaly_auroc", "anomaly AUROC", True),
    ("controllability", "max abs r per factor (mean)", True),
)
RETURNS = (("return", "return"), ("return_auc", "return AUC"))


def _budgets(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({n for r in rows for n in r.get("probe_mean", {})}, key=int)


def flat_row(row: dict[str, Any], budgets: list[str]) -> dict[str, Any]:
    """One CSV-ready row: the scalar scores, ``probe@N`` per budget, mean controllability."""
    out: dict[str, Any] = {
        k: row.get(k)
        for k in ("run", "kind", "beta", "seed", "latent_dim", "recon", "kl", "active_units")
    }
    for n in budgets:
        out[f"probe@{n}"] = row.get("probe_mean", {}).get(n)
    for k in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness"):
        out[k] = row.get(k)
    out["anomaly_auroc"] = row.get("anomaly_auroc")
    ctrl = row.get("controllability")
    out["controllability"] = (
        float(np.mean([v["abs_corr"] for v in ctrl.values()])) if ctrl else None
    )
    for k, _ in RETURNS:
        out[k] = row.get(k)
    out["train_seconds"] = row.get("train_seconds")
    out["agent_seconds"] = row.get("agent_seconds")
    return out


def rank_correlations(flat: list[dict[str, Any]], budgets: list[str]) -> dict[str, dict[str, Any]]:
    """Spearman correlation of each score with each return measure, across the members."""
    keys = [k for k, _, _ in SCORES] + [f"probe@{n}" for n in budgets]
    out: dict[str, dict[str, Any]] = {}
    for target, _ in RETURNS:
        ys = [r.get(target) for r in flat]
        if any(y is None for y in ys):
            continue
        out[target] = {}
        for k in keys:
            xs = np.array([np.nan if r.get(k) is None else r[k] for r in flat], float)
            rho = spearman(xs, np.array(ys, float))
            out[target][k] = None if np.isnan(rho) else rho
    return out


def plot_label_efficiency(
    rows: list[dict[str, Any]], controls: dict[str, dict[str, Any]], path: Path
) -> Path:
    """Mean held-out probe score against labelled frames: one line per member and control."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for row in rows:
        pm = row["probe_mean"]
        ns = sorted(pm, key=int)
        ax.plot([int(n) for n in ns], [pm[n] for n in ns], marker="o", label=row["run"])
    styles = {"pixels": ("black", "x"), "random": ("grey", "v"), "pca": ("tab:brown", "s")}
    for name, c in controls.items():
        pm = c["probe_mean"]
        ns = sorted(pm, key=int)
        color, marker = styles.get(name, ("grey", "x"))
        ax.plot(
            [int(n) for n in ns],
            [pm[n] for n in ns],
            ls="--",
            color=color,
            marker=marker,
            mfc="none",
            label=f"control: {name}",
        )
    ax.set_xscale("log")
    ticks = sorted({int(n) for r in [*rows, *controls.values()] for n in r["probe_mean"]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("labelled frames")
    ax.set_ylabel("held-out score, mean over factors\n(accuracy or R^2)")
    ax.set_title("Label efficiency: a linear head on the frozen code")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) >= 100 else f"{x:.2f}"
    return str(x)


def _write_csv(path: Path, flat: list[dict[str, Any]], control_rows: list[dict[str, Any]]) -> None:
    """One flat row per member, then the controls; the columns are the first member's keys."""
    fields = list(flat[0])
    with atomic_open(path) as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(flat + control_rows)


def _copy_traversals(rows: list[dict[str, Any]], out: Path) -> list[tuple[str, str]]:
    """Copy each member's traversal picture into ``out``; return (run, file name) pairs."""
    traversal_files = []
    for r in rows:
        if r.get("traversals_png") and Path(r["traversals_png"]).is_file():
            dst = out / f"traversals_{r['run']}.png"
            shutil.copy2(r["traversals_png"], dst)
            traversal_files.append((r["run"], dst.name))
    return traversal_files


def _table_columns(budgets: list[str], flat: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, title) of the table's columns; the returns only when some member has one."""
    cols = [
        ("recon", "recon"),
        ("kl", "KL"),
        ("active_units", "active"),
        *[(f"probe@{n}", f"probe@{n}") for n in budgets],
        ("mig", "MIG"),
        ("dci_disentanglement", "DCI D"),
        ("dci_completeness", "DCI C"),
        ("dci_informativeness", "DCI I"),
        ("anomaly_auroc", "AUROC"),
        ("controllability", "ctrl |r|"),
    ]
    if any(r.get("return") is not None for r in flat):
        cols += [("return", "return"), ("return_auc", "return AUC")]
    return cols


def _scores_table(
    env_id: str,
    n_frames: int,
    settings: dict[str, Any],
    n_members: int,
    table_rows: list[dict[str, Any]],
    cols: list[tuple[str, str]],
) -> list[str]:
    """The title, the shared training budget, the table of scores and how to read it."""
    lines = [
        f"# Which autoencoder? {env_id}",
        "",
        f"{n_members} members trained on the same {n_frames:,} frames with the same budget "
        f"({settings.get('epochs')} epochs, batch {settings.get('batch_size')}, seeds "
        f"{list(settings.get('seeds', []))}, model {settings.get('model')}). Every score is "
        "computed on held-out episodes; labelled frames for the probes come from training "
        "episodes.",
        "",
        "| model | " + " | ".join(t for _, t in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in table_rows:
        lines.append(f"| {r['run']} | " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
    lines += [
        "",
        "recon: reconstruction error of the posterior mean, nats per frame (summed over pixels); "
        "KL: nats per frame (VAEs); active: units whose mean varies across frames (Cov > 0.01); "
        "probe@N: mean over factors of a linear head's held-out score (accuracy for discrete "
        "factors, R^2 for continuous ones) trained on N labelled frames; MIG and DCI "
        "(disentanglement, completeness, informativeness) against the env's true factors; "
        "AUROC: the model's anomaly score separating held-out frames from shifted ones; "
        "ctrl |r|: per factor the largest absolute correlation of one code unit with it, "
        "averaged. Controls: `pixels` (frames resized to 16x16, probes only), `random` (an "
        "untrained encoder of the same architecture), `pca` (as many principal components as "
        "the code has units).",
        "",
        "![label efficiency](label_efficiency.png)",
        "",
    ]
    return lines


def _correlation_lines(corr: dict[str, dict[str, Any]], n_members: int) -> list[str]:
    """The Spearman correlation of each score with each return measure, if any was computed."""
    if not corr:
        return []
    lines = [
        "## Which cheap score predicts return?",
        "",
        f"Spearman rank correlation across the {n_members} members (with so few members, "
        "only large magnitudes mean anything):",
        "",
        "| score | " + " | ".join(t for k, t in RETURNS if k in corr) + " |",
        "|---|" + "---|" * len(corr),
    ]
    for k in corr[next(iter(corr))]:
        lines.append(f"| {k} | " + " | ".join(_fmt(corr[t].get(k)) for t in corr) + " |")
    lines.append("")
    return lines


def _traversal_lines(traversal_files: list[tuple[str, str]]) -> list[str]:
    """The factor traversal pictures, one per member that has them."""
    if not traversal_files:
        return []
    lines = [
        "## Factor traversals",
        "",
        "Per factor (row), the code unit most correlated with it, swept over +-2.5 standard "
        "deviations (the prior's for VAEs, the code's for the others) from one held-out frame.",
        "",
    ]
    for run, name in traversal_files:
        lines += [f"**{run}**", "", f"![{run} traversals]({name})", ""]
    return lines


def _closing_lines(timings: dict[str, float] | None, command: str) -> list[str]:
    """The wall-clock of each stage (if given), the command and the library versions."""
    lines: list[str] = []
    if timings:
        lines += [
            "Wall-clock: "
            + ", ".join(f"{k.replace('_', ' ')} {v / 60:.1f} min" for k, v in timings.items()),
            "",
        ]
    versions = library_versions()
    lines += [
        "## Reproduce",
        "",
        "```",
        command or "worldvae sweep",
        "```",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        "",
    ]
    return lines


def write_sweep_report(
    rows: list[dict[str, Any]],
    controls: dict[str, dict[str, Any]],
    out_dir: str | Path,
    env_id: str,
    n_frames: int,
    settings: dict[str, Any],
    command: str = "",
    timings: dict[str, float] | None = None,
) -> Path:
    """Write ``report.md``, ``results.{csv,json}``, ``label_efficiency.png``, traversals."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    budgets = _budgets(rows + list(controls.values()))
    flat = [flat_row(r, budgets) for r in rows]
    control_rows = [flat_row({"run": f"control: {n}"} | c, budgets) for n, c in controls.items()]
    _write_csv(out / "results.csv", flat, control_rows)
    corr = rank_correlations(flat, budgets)
    write_json(
        out / "results.json",
        {
            "env_id": env_id,
            "runs": rows,
            "controls": controls,
            "rank_correlation": corr,
            "settings": settings,
            "timings": timings or {},
        },
    )
    plot_label_efficiency(rows, controls, out / "label_efficiency.png")
    traversal_files = _copy_traversals(rows, out)
    cols = _table_columns(budgets, flat)
    lines = _scores_table(env_id, n_frames, settings, len(rows), flat + control_rows, cols)
    lines += _correlation_lines(corr, len(flat))
    lines += _traversal_lines(traversal_files)
    lines += _closing_lines(timings, command)
    with atomic_open(out / "report.md") as f:
        f.write("\n".join(lines))
    return out / "report.md"
