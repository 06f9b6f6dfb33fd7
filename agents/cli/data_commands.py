"""``worldvae collect`` and ``worldvae data info|verify``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agents.cli.common import (
    add_cluster_arguments,
    add_env_arguments,
    add_workers_flags,
    env_choices,
    new_env_spec,
)
from agents.cli.minari_commands import (
    add_export_minari_parser,
    add_minari_source_options,
    data_source,
    open_data_source,
)
from agents.cli.options import add_config_options, bounded, config_values
from envs.collector import CollectConfig
from worldvae.rundir import ForeignDirError, RunDirLock, check_folder, foreign_entries

BUDGET = ("n_episodes", "n_frames")  # exactly one is given


def add_collect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="collect rollouts of an env into an episode dataset",
        description="Play episodes in parallel worker processes and store frames, actions, "
        "rewards and episode ends. Re-running the same command resumes.",
    )
    add_env_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="dataset directory")
    budget = p.add_mutually_exclusive_group(required=True)
    settings = add_config_options(budget, CollectConfig, only=BUDGET)
    settings += add_config_options(p, CollectConfig, skip=BUDGET)
    p.add_argument("--overwrite", action="store_true", help="delete what --out holds first")
    p.set_defaults(collect_fields=settings)
    add_cluster_arguments(p)
    add_workers_flags(p, ("--workers", "n_workers"))
    p.set_defaults(func=run_collect)


def run_collect(args: argparse.Namespace) -> int:
    from envs.collector import collect

    check_folder(args.out)
    with RunDirLock(args.out, "collect"):
        result = _collect(args, collect)
    print(
        f"collected {result.new_episodes} new episodes ({result.new_frames} frames, "
        f"{result.frames_per_second:.0f} frames/s); {result.out_dir} now holds "
        f"{result.total_episodes} episodes, {result.total_frames} frames"
    )
    return 0


def _collect(args: argparse.Namespace, collect: Any) -> Any:
    settings = config_values(args, args.collect_fields)
    agent = _agent_policy(args, settings.get("policy", ""))
    if agent is None:
        env = new_env_spec(args)
    else:  # the agent's env, the agent's frames
        settings["policy"] = agent
        given = env_choices(args)
        if given.get("backend") == "auto":  # not a choice: the agent's backend stands
            given.pop("backend")
        env = agent.env_spec().resolve(given, f"the agent's config ({agent.path})")
    return collect(
        args.out,
        env,
        **settings,
        overwrite=args.overwrite,
        cluster=args.cluster,
    )


def _agent_policy(args: argparse.Namespace, policy: str) -> Any:
    """``agent:RUN`` / ``best-agent:RUN``: the trained agent as the collection policy (its env
    id must be ``--env``); None for the other policies."""
    from agents.collection import AgentPolicySpec

    agent = AgentPolicySpec.parse(policy)
    if agent is not None and agent.env_spec().env_id != args.env:
        raise ValueError(
            f"the agent in {agent.path} was trained on {agent.env_spec().env_id}, not "
            f"{args.env}; pass --env {agent.env_spec().env_id}"
        )
    return agent


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect an episode dataset")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="counts, return statistics and a mosaic PNG")
    info.add_argument(
        "dir", type=data_source, help="dataset directory, or minari:NAME (a Minari dataset)"
    )
    info.add_argument(
        "--mosaic",
        type=Path,
        default=None,
        help="PNG path (default DIR/mosaic.png; none for a Minari dataset), in the dataset or "
        "in a new or empty folder",
    )
    info.add_argument(
        "--n", type=bounded(int, 1, 4096), default=64, help="frames in the mosaic (1..4096)"
    )
    add_minari_source_options(info)
    info.set_defaults(func=run_info)
    verify = data_sub.add_parser(
        "verify",
        help="read every episode through its checksums and check it against the manifest",
    )
    verify.add_argument("dir", type=Path)
    verify.set_defaults(func=run_verify)
    merge = data_sub.add_parser(
        "merge",
        help="join datasets of the same frames (e.g. rounds from different policies) into one",
    )
    merge.add_argument("sources", nargs="+", type=Path, help="two or more dataset directories")
    merge.add_argument("--out", required=True, type=Path, help="the merged dataset directory")
    merge.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    merge.set_defaults(func=run_merge)
    add_export_minari_parser(data_sub)


def run_info(args: argparse.Namespace) -> int:
    from worldvae.data import EpisodeDataset
    from worldvae.data.writer import MOSAIC_NAME

    source = open_data_source(args, args.dir)
    if isinstance(source, EpisodeDataset) and args.mosaic is None:  # Minari's folder stays as is
        _show_info(source, None, args.n)
        print("mosaic     none (give --mosaic PNG for one)")
        return 0
    ds = source if isinstance(source, EpisodeDataset) else EpisodeDataset(source)
    mosaic = args.mosaic or ds.root / MOSAIC_NAME
    if mosaic.is_dir():
        raise ValueError(
            f"--mosaic {mosaic} is a folder; give the PNG file's path, such as "
            f"{mosaic / MOSAIC_NAME}"
        )
    check_folder(mosaic.parent, "--mosaic")
    with RunDirLock(mosaic.parent, "data info"):
        _check_mosaic_folder(mosaic)
        path = _show_info(ds, mosaic, args.n)
    print(f"mosaic     {path}")
    return 0


def _check_mosaic_folder(mosaic: Path) -> None:
    """Refuse to write ``mosaic`` into a folder holding anything but a dataset's own files (in a
    dataset) or an earlier mosaic of that name (a re-run). Writes nothing."""
    from worldvae.data.manifest import MANIFEST_NAME
    from worldvae.data.writer import DATASET_ENTRIES

    folder = mosaic.parent
    ours = (*DATASET_ENTRIES, mosaic.name) if (folder / MANIFEST_NAME).is_file() else ()
    foreign = [n for n in foreign_entries(folder, ours) if n != mosaic.name]
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ForeignDirError(
            f"--mosaic's folder {folder} holds {shown}, which neither a dataset nor data info "
            "wrote; nothing was written: give --mosaic a path in the dataset or in a new or "
            "empty folder"
        )


def _show_info(ds: Any, mosaic: Path | None, n: int) -> Path | None:
    """Print the dataset's numbers and write its mosaic of ``n`` frames (unless ``mosaic`` is
    None); return its path."""
    from worldvae.images import image_grid, save_png

    m = ds.manifest
    s = ds.stats()
    print(f"dataset    {ds.root}")
    print(
        f"env        {m.env_id}  frames {m.frame_shape}  policy {m.policy['name']}  seed {m.seed}"
    )
    print(f"options    {m.env_spec.options()}")
    print(
        f"episodes   {s['episodes']} (train {s['train_episodes']}, val {s['val_episodes']})  "
        f"frames {s['frames']}  mean length {s['length_mean']:.1f}"
    )
    print(
        f"return     mean {s['return_mean']:.2f} +- {s['return_std']:.2f}  "
        f"min {s['return_min']:.2f}  max {s['return_max']:.2f}"
    )
    print(f"versions   {', '.join(f'{k} {v}' for k, v in sorted(m.versions.items()))}")
    if mosaic is None:
        return None
    frames = ds.sample_frames(n)
    scale = max(1, 128 // max(m.frame_shape[:2]))
    return Path(save_png(mosaic, image_grid(frames, n_cols=8, scale=scale)))


def run_verify(args: argparse.Namespace) -> int:
    """Name every unusable file of the dataset and what is wrong with it; 1 when there is one."""
    from worldvae.data.dataset import verify_dataset

    report = verify_dataset(args.dir)
    for name, problem in report.bad:
        print(f"unusable: {name}: {problem}")
    print(f"{len(report.intact)} episodes intact, {len(report.bad)} unusable")
    if report.bad:
        print(
            "move the unusable episode files out of the dataset and re-run the collect command "
            "to re-collect them (an episode is a pure function of its seed)"
        )
    return 1 if report.bad else 0


def run_merge(args: argparse.Namespace) -> int:
    from worldvae.data.writer import merge_datasets

    merged = merge_datasets(args.sources, args.out, overwrite=args.overwrite)
    counts = ", ".join(
        f"{s['episodes']} from {s['path']}" for s in merged.policy["params"]["sources"]
    )
    print(f"merged {counts} into {args.out}")
    return 0
