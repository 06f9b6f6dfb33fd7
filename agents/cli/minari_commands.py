"""Minari on the command line: ``worldvae data export-minari`` and ``--data minari:NAME``.

``train-vae`` and ``data info`` read ``--data minari:NAME`` (a Minari dataset with image
observations) through :class:`envs.minari_data.MinariEpisodeDataset`; their ``--minari-root``
and ``--minari-frame-size`` options are added here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.cli.options import bounded
from worldvae.data.dataset import EpisodeDataset
from worldvae.envspec import MAX_FRAME_SIZE, MIN_FRAME_SIZE

MINARI_PREFIX = "minari:"
ROOT_HELP = "Minari's datasets folder (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets)"


def data_source(text: str) -> Path | str:
    """The ``type`` of a ``--data`` argument: a dataset folder (a Path), or ``minari:NAME``
    (kept as that string)."""
    if text.startswith(MINARI_PREFIX):
        if not text[len(MINARI_PREFIX) :]:
            raise argparse.ArgumentTypeError("minari: needs a dataset name, e.g. minari:ns/name-v0")
        return text
    return Path(text)


def add_minari_source_options(p: argparse.ArgumentParser) -> None:
    """The options of a command whose data may be ``minari:NAME``."""
    group = p.add_argument_group("Minari datasets (--data minari:NAME)")
    group.add_argument("--minari-root", type=Path, default=None, help=ROOT_HELP)
    group.add_argument(
        "--minari-frame-size",
        type=bounded(int, MIN_FRAME_SIZE, MAX_FRAME_SIZE),
        default=None,
        help="square side the frames of a Minari dataset are resized to on the fly (default "
        "64, the V's default); a dataset exported by worldvae keeps its collected size",
    )


def open_data_source(
    args: argparse.Namespace, source: Path | str, val_fraction: float = 0.1
) -> Path | EpisodeDataset:
    """``source`` for a command that reads frames: a dataset folder as given (a Path), or
    the Minari dataset ``minari:NAME`` opened (a ``MinariEpisodeDataset``).

    Raises:
        ValueError: a Minari option given with a dataset folder.
    """
    root, frame_size = args.minari_root, args.minari_frame_size
    if isinstance(source, Path):
        given = [f for f, v in (("--minari-root", root), ("--minari-frame-size", frame_size)) if v]
        if given:
            raise ValueError(
                f"{' and '.join(given)} apply to --data minari:NAME, not to the dataset folder "
                f"{source} (its frames are those it was collected with)"
            )
        return source
    from envs.minari_data import MinariEpisodeDataset

    return MinariEpisodeDataset(
        source[len(MINARI_PREFIX) :], root, val_fraction=val_fraction, frame_size=frame_size
    )


def add_export_minari_parser(data_sub: argparse._SubParsersAction) -> None:
    """``worldvae data export-minari DATASET NAME``."""
    p = data_sub.add_parser(
        "export-minari",
        help="write a dataset as a Minari dataset (needs the minari extra)",
        description="Write the episodes of DATASET (frames as uint8 (T+1, H, W, C) "
        "observations, stored losslessly; actions, rewards, terminations, truncations) as the "
        "Minari dataset NAME, with the env spec in its metadata. Read it back with "
        "`worldvae train-vae --data minari:NAME` or `minari.load_dataset(NAME)`.",
    )
    p.add_argument("dataset", type=Path, help="dataset directory")
    p.add_argument("name", help="Minari dataset id, (namespace/)name-vN, e.g. worldvae/pong-v0")
    p.add_argument("--minari-root", type=Path, default=None, help=ROOT_HELP)
    p.add_argument(
        "--overwrite", action="store_true", help="replace the Minari dataset NAME (it alone)"
    )
    p.set_defaults(func=run_export_minari)


def run_export_minari(args: argparse.Namespace) -> int:
    from envs.minari_data import export_minari

    done = export_minari(args.dataset, args.name, args.minari_root, overwrite=args.overwrite)
    print(
        f"exported {done.episodes} episodes ({done.steps} steps) of {args.dataset} as the "
        f"Minari dataset {done.name} in {done.path}"
    )
    return 0
