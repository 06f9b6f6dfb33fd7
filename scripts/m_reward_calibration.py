"""M's reward head against real returns: each M read teacher-forced over real episodes.

    python scripts/m_reward_calibration.py LATENTS --memory NAME=RUN [--memory NAME=RUN ...]
        [--group NAME=FIRST-LAST ...] [--split all|val]

``LATENTS`` is a latent dataset (``worldvae encode-data``) of the V the Ms were trained on;
``--memory`` names each M (a ``train-rnn`` run or model directory); ``--group`` names a range of
episode indices (inclusive; the first round's episodes of a merged dataset, say, then the
second's); ``--split val`` keeps only the dataset's validation episodes (those an M trained on
the same dataset did not learn from). Prints one Markdown row per M and group: the mean real
return per episode, the mean of M's predicted rewards summed over the same steps, their ratio
and correlation over episodes, and the mean absolute error per step. A ratio far below 1 on
episodes of a good driver means M's dream cannot tell driving from crashing.
"""

from __future__ import annotations

import argparse
import sys

import torch

from worldvae.data.latents import LatentDataset, LatentEpisodeInfo
from worldvae.memory.diagnostics import reward_calibration
from worldvae.memory.io import load_memory


def named(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> (name, value)."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def index_range(text: str) -> tuple[str, tuple[int, int]]:
    """``NAME=FIRST-LAST`` -> (name, (first, last))."""
    name, value = named(text)
    first, sep, last = value.partition("-")
    if not sep or not first.isdigit() or not last.isdigit() or int(first) > int(last):
        raise argparse.ArgumentTypeError(f"expected NAME=FIRST-LAST episode indices, got {text!r}")
    return name, (int(first), int(last))


def episode_groups(
    dataset: LatentDataset, split: str, groups: list[tuple[str, tuple[int, int]]]
) -> list[tuple[str, list[LatentEpisodeInfo]]]:
    """The episodes of ``split`` ("all" or "val") in each named index range (every episode
    as one group "all" where none is named).

    Raises:
        ValueError: a range that holds no episode of the split.
    """
    episodes = dataset.split("val") if split == "val" else dataset.episodes
    out = []
    for group, (first, last) in groups or [("all", (0, max(e.index for e in dataset.episodes)))]:
        chosen = [e for e in episodes if first <= e.index <= last]
        if not chosen:
            raise ValueError(f"no {split} episode in {group}={first}-{last}")
        out.append((group, chosen))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("latents", help="a latent dataset (worldvae encode-data)")
    parser.add_argument("--memory", type=named, action="append", required=True)
    parser.add_argument("--group", type=index_range, action="append", default=[])
    parser.add_argument("--split", choices=("all", "val"), default="all")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        dataset = LatentDataset(args.latents)
        groups = episode_groups(dataset, args.split, args.group)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.latents}, {args.split} episodes")
    print()
    print("| M | episodes | n | real return | M's return | ratio | correlation | step MAE |")
    print("|---|---|---|---|---|---|---|---|")
    for name, path in args.memory:
        try:
            model, _ = load_memory(path, device="cpu")
        except (FileNotFoundError, ValueError) as e:  # a checkpoint error is a ValueError
            print(f"error: --memory {name}: {e}", file=sys.stderr)
            return 1
        for group, chosen in groups:
            try:
                s = reward_calibration(model, dataset, chosen).summary()
            except ValueError as e:  # no reward head, or latents of another V
                print(f"error: --memory {name}: {e}", file=sys.stderr)
                return 1
            print(
                f"| {name} | {group} | {s['episodes']:.0f} | {s['real_return']:.1f} | "
                f"{s['predicted_return']:.1f} | {s['ratio']:.2f} | {s['correlation']:.2f} | "
                f"{s['step_mae']:.3f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
