"""Scoring drivers on the canonical tracks: gymnasium's own CarRacing-v3 seeds, which the
published scores use, played after training and never used to choose a policy.

:func:`canonical_score` scores the comparison's best latent policy (the ``carracing``
preset's last stage); :func:`score_drivers` scores any set of agent bundles the same way
(World Models' recipe, :mod:`agents.world_models`). Scores are kept as JSON and reused when a
pipeline is re-run with the same settings.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.bundle import policy_sha256
from agents.comparison import ComparisonResult, best_policy
from agents.evaluation import evaluate_bundle
from agents.presets import CanonicalStage
from worldvae.atomic import write_json

logger = logging.getLogger(__name__)

# Published CarRacing-v3 (v0 then) scores over 100 tracks, for the report.
FIELD_MARKS = (
    "World Models 906 +- 21 (V+M+C), V only 632 +- 251, V + hidden layer 788 +- 141; "
    "rl-zoo PPO CnnPolicy 154 +- 75 after 4M steps, PPO-LSTM 863 +- 97"
)
TRACKS_PER_CHUNK = 10  # a process start (~4 s) per ~100 s of gymnasium CarRacing
BACKEND_TITLES = {
    "gymnasium": "gymnasium CarRacing-v3 (the published scores' env)",
    "envpool": "envpool CarRacing-v3 (trained on)",
}


@dataclass(frozen=True)
class Chosen:
    """A policy chosen for scoring: the bundle, ``which`` of its policies (``"best"`` or
    ``"final"``), the training step it was taken at, and whether it is played with sampled
    actions (``sampled``; else as its periodic evaluations played it, its mode action)."""

    bundle: Path
    which: str
    step: int
    sampled: bool = False

    @property
    def deterministic(self) -> bool | None:
        """``evaluate_bundle``'s argument: False to sample, None for the bundle's own way."""
        return False if self.sampled else None


def best_of_arm(result: ComparisonResult, obs: str) -> Chosen | None:
    """The best policy over the runs of the arm ``obs``: of the highest periodic evaluation,
    or the best on the runs' shortlists (see :func:`~agents.comparison.best_policy`); None
    when the comparison has no such arm."""
    runs = [r["run"] for r in result.runs if r["obs"] == obs]
    if not runs:
        return None
    best, which, step = best_policy(result.out_dir / "runs", runs)
    return Chosen(result.out_dir / "runs" / best, which, step)


def canonical_score(result: ComparisonResult, path: Path, settings: CanonicalStage) -> str:
    """Score the best latent policy over ``settings.episodes`` tracks on each of
    ``settings.backends``, from ``settings.seed``.

    The policy is the one of the highest periodic evaluation over the latent runs, or the
    best on their shortlists (see :func:`best_of_arm`); those play the tracks from the
    comparison's evaluation seed (a shortlist's from 1000 after it) on the training backend,
    which are not gymnasium's canonical tracks.

    Tracks are played in chunks (``settings.workers`` processes each) until all are scored or
    ``settings.max_seconds`` have passed on that backend; the section says how many were.
    Scores are kept in ``path`` (JSON) and reused when the pipeline is re-run. Returns a
    Markdown section for the report ("" without a latent arm).
    """
    chosen = best_of_arm(result, "latent")
    if chosen is None:
        return ""
    scores = _scores_kept(path, chosen, settings)
    return canonical_section(chosen, settings, scores)


def _key(chosen: Chosen, settings: CanonicalStage) -> dict[str, Any]:
    key = {
        "run": chosen.bundle.name,
        "episodes": settings.episodes,
        "seed": settings.seed,
        "which": chosen.which,
        "step": chosen.step,
        "backends": list(settings.backends),
        # a policy trained again into the same folder (same name and step) is played again
        "policy_sha256": policy_sha256(chosen.bundle, chosen.which),
    }
    return key | {"sampled": True} if chosen.sampled else key


def _kept_or_played(
    kept: dict[str, Any], chosen: Chosen, settings: CanonicalStage
) -> tuple[dict[str, Any], bool]:
    """The entry ``kept`` when it was scored with the same policy and settings, else a new
    entry with the chosen policy played on every backend; and whether it was played now."""
    key = _key(chosen, settings)
    # an entry without "sampled" was played by the mode: it must not stand for sampled actions,
    # nor a sampled entry for the mode
    same_way = bool(kept.get("sampled", False)) == chosen.sampled
    if same_way and {k: kept.get(k) for k in key} == key:
        return kept, False
    scores = {
        backend: score_on_backend(
            chosen.bundle, backend, chosen.which, settings, chosen.deterministic
        )
        for backend in settings.backends
    }
    return key | {"scores": scores}, True


def _scores_kept(path: Path, chosen: Chosen, settings: CanonicalStage) -> dict[str, Any]:
    """The chosen policy's scores on every backend: those ``path`` holds for the same
    settings, else played now and saved there."""
    done = json.loads(path.read_text()) if path.exists() else {}
    entry, played = _kept_or_played(done, chosen, settings)
    if played:
        write_json(path, entry)
    kept: dict[str, Any] = entry["scores"]
    return kept


def score_drivers(
    drivers: dict[str, Chosen], path: Path, settings: CanonicalStage
) -> dict[str, dict[str, Any]]:
    """Each driver's scores on ``settings``' tracks and backends (name -> backend -> score,
    see :func:`score_on_backend`); kept in ``path`` per driver, so a re-run plays only the
    drivers that are new or changed."""
    done = json.loads(path.read_text()) if path.exists() else {}
    out: dict[str, dict[str, Any]] = {}
    for name, chosen in drivers.items():
        entry, played = _kept_or_played(done.get(name, {}), chosen, settings)
        if played:
            done[name] = entry
            write_json(path, done)
        out[name] = entry["scores"]
    return out


def score_on_backend(
    bundle: Path,
    backend: str,
    which: str,
    settings: CanonicalStage,
    deterministic: bool | None = None,
) -> dict[str, Any]:
    """The returns of ``bundle``'s ``which`` policy on ``settings.episodes`` tracks of
    ``backend`` from ``settings.seed``, or as many as ``settings.max_seconds`` allowed; its
    actions as ``evaluate_bundle``'s ``deterministic`` says."""
    t = time.perf_counter()
    returns: list[float] = []
    # TRACKS_PER_CHUNK tracks per process between budget checks: each chunk starts its
    # processes afresh
    chunk = TRACKS_PER_CHUNK * max(settings.workers, 1)
    while len(returns) < settings.episodes:
        if settings.max_seconds and time.perf_counter() - t > settings.max_seconds:
            break
        n = min(chunk, settings.episodes - len(returns))
        r = evaluate_bundle(
            bundle,
            n,
            settings.seed + len(returns),
            device="cpu",
            deterministic=deterministic,
            backend=backend,
            workers=settings.workers,
            which=which,
        )
        returns += r.returns.tolist()
    score = {
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "returns": returns,
        "seconds": round(time.perf_counter() - t, 1),
    }
    logger.info(
        "%s on %s: %.1f +- %.1f over %d tracks",
        bundle.name,
        backend,
        score["mean"],
        score["std"],
        len(returns),
    )
    return score


def policy_words(chosen: Chosen) -> str:
    """How a report names the chosen policy of a bundle."""
    if chosen.which == "best":
        return f"the policy of its best evaluation during training (step {chosen.step:,})"
    return "its final policy"


def canonical_section(chosen: Chosen, settings: CanonicalStage, scores: dict[str, Any]) -> str:
    """The report's Markdown section of the best latent policy's canonical scores."""
    rows = []
    for backend in sorted(scores, key=lambda b: b != "gymnasium"):
        v = scores[backend]
        r = v["returns"]
        rows.append(
            f"| {BACKEND_TITLES[backend]} | {len(r)} | {v['mean']:.1f} +- {v['std']:.1f} | "
            f"{min(r):.1f} | {max(r):.1f} | {v['seconds'] / 60:.1f} min |"
        )
    return "\n".join(
        [
            f"## The best latent agent on up to {settings.episodes} tracks",
            "",
            f"`{chosen.bundle.name}`, {policy_words(chosen)} (deterministic, track seeds from "
            f"{settings.seed}; fewer tracks than asked means the stage's time budget ran out):",
            "",
            "| env | tracks | mean return +- std | min | max | time |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"For reference, over 100 tracks: {FIELD_MARKS}; solved is 900.",
        ]
    )
