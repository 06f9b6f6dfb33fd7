"""How far an ensemble of Ms disagrees about the next latent on real episodes.

    python scripts/m_disagreement.py LATENTS --memory RUN --memory RUN [--memory RUN ...]
        [--group NAME=FIRST-LAST ...] [--split all|val]

``LATENTS`` is a latent dataset (``worldvae encode-data``) of the V the Ms were trained on;
each ``--memory`` is one M (a ``train-rnn`` run or model directory; two or more), the first
the one a dream's agent reads ``h`` from. Every M reads each real episode teacher-forced, its
state carried through the episode; per group of episodes (``--group``, inclusive indices, as
in ``scripts/m_reward_calibration.py``) it prints one Markdown row: the disagreement per step
(:func:`worldvae.memory.model.disagreement`: mean, median, 90th and 99th percentiles) and the
mean real reward per step. That is the Ms' agreement on states like those they learned from:
the scale against which ``train-agent --dream --dream-memory ... --dream-penalty LAMBDA`` is
set (a penalty of LAMBDA times the median costs a controller that much reward per step where
the Ms agree as well as on real driving).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from m_reward_calibration import episode_groups, index_range

from worldvae.data.latents import LatentDataset
from worldvae.memory.diagnostics import teacher_forced_disagreement
from worldvae.memory.io import load_memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("latents", help="a latent dataset (worldvae encode-data)")
    parser.add_argument("--memory", action="append", required=True, help="an M; two or more")
    parser.add_argument("--group", type=index_range, action="append", default=[])
    parser.add_argument("--split", choices=("all", "val"), default="all")
    args = parser.parse_args(argv)
    if len(args.memory) < 2:
        parser.error("give two Ms or more (--memory RUN --memory RUN)")
    torch.set_num_threads(1)
    try:
        dataset = LatentDataset(args.latents)
        models = [load_memory(path, device="cpu")[0] for path in args.memory]
        groups = episode_groups(dataset, args.split, args.group)
    except (FileNotFoundError, ValueError) as e:  # a checkpoint error is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.latents}, {args.split} episodes, {len(models)} Ms")
    print()
    print("| episodes | n | steps | mean | median | p90 | p99 | real reward per step |")
    print("|---|---|---|---|---|---|---|---|")
    for group, chosen in groups:
        try:
            spread = teacher_forced_disagreement(models, dataset, chosen)
        except ValueError as e:  # latents of another V
            print(f"error: {e}", file=sys.stderr)
            return 1
        reward = np.concatenate([dataset.load(e)["rewards"] for e in chosen]).mean()
        p50, p90, p99 = np.percentile(spread, [50, 90, 99])
        print(
            f"| {group} | {len(chosen)} | {len(spread)} | {spread.mean():.3f} | {p50:.3f} | "
            f"{p90:.3f} | {p99:.3f} | {reward:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
