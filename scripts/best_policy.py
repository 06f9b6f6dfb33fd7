"""Print the policy of the highest periodic evaluation among a comparison's runs.

    python scripts/best_policy.py RUNS_DIR [--obs latent]

``RUNS_DIR`` is a ``compare`` (or ``pipeline``) output's ``runs/`` folder. Only runs whose
agent observed ``--obs`` are considered. The answer is a ``--policy`` value for
``worldvae collect``: ``best-agent:RUN`` when the run kept the policy of its best evaluation,
``agent:RUN`` (its final policy) otherwise; ``worldvae evaluate`` takes the path after the
colon with ``--which best`` or ``--which final``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agents.pipeline import best_policy


def arm_runs(runs_dir: Path, obs: str) -> list[str]:
    """The names of the finished runs in ``runs_dir`` whose agent observed ``obs``."""
    names = []
    for config in sorted(runs_dir.glob("*/config.json")):
        info = json.loads(config.read_text())
        if info.get("agent", {}).get("obs") == obs and "final_mean_return" in info:
            names.append(config.parent.name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, help="a comparison's runs/ folder")
    parser.add_argument("--obs", default="latent", help="the arm to choose from (default latent)")
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        print(
            f"error: {args.runs_dir} is not a directory; pass a comparison's runs/ folder",
            file=sys.stderr,
        )
        return 2
    runs = arm_runs(args.runs_dir, args.obs)
    if not runs:
        print(
            f"error: no finished {args.obs!r} runs in {args.runs_dir}; run the comparison "
            "first (or pick another --obs)",
            file=sys.stderr,
        )
        return 2
    run, which, _ = best_policy(args.runs_dir, runs)
    prefix = "best-agent" if which == "best" else "agent"
    print(f"{prefix}:{args.runs_dir / run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
