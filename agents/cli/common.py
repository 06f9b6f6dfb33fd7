"""Shared argument parsing helpers for the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agents.cli.options import bounded
from envs.factory import MAX_EPISODE_STEPS, MAX_FRAME_SIZE, MAX_FRAME_SKIP, MIN_FRAME_SIZE
from envs.registry import ENV_ID_HELP


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """``"0,12,0,0"`` -> ``(0, 12, 0, 0)`` (pixels off top, bottom, left, right)."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"takes TOP,BOTTOM,LEFT,RIGHT, got {text!r}")
    one = bounded(int, 0, MAX_FRAME_SIZE * 16)
    top, bottom, left, right = (one(p.strip()) for p in parts)
    return (top, bottom, left, right)


def parse_env_kwarg(item: str) -> tuple[str, Any]:
    """``"domain_randomize=true"`` -> ``("domain_randomize", True)``; the value read as JSON."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE with KEY a name, got {item!r}")
    if key == "render_mode":
        raise argparse.ArgumentTypeError(
            "render_mode is set by worldvae (frames come from rgb_array); remove it"
        )
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_env_kwargs(items: list[tuple[str, Any]] | list[str] | None) -> dict[str, Any]:
    """Pairs from :func:`parse_env_kwarg` (or raw ``KEY=VALUE`` strings) -> dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, value = parse_env_kwarg(item) if isinstance(item, str) else item
        out[key] = value
    return out


def add_env_arguments(p: argparse.ArgumentParser) -> None:
    """The env id and its ``make_env`` options, shared by every command that makes a new env."""
    p.add_argument("--env", required=True, help=ENV_ID_HELP)
    add_frame_arguments(p)
    add_backend_argument(p)


def add_frame_arguments(p: argparse.ArgumentParser) -> None:
    """The ``make_env`` frame options. Each defaults to "not given" (None): what is not given
    comes from the recorded env spec, or for a new one from the env's recommended options."""
    p.add_argument(
        "--frame-size",
        type=bounded(int, MIN_FRAME_SIZE, MAX_FRAME_SIZE),
        default=None,
        help=f"square frame side, {MIN_FRAME_SIZE}..{MAX_FRAME_SIZE} (default 64)",
    )
    p.add_argument("--crop", type=parse_crop, default=None, help="pixels off TOP,BOTTOM,LEFT,RIGHT")
    p.add_argument(
        "--grayscale", action="store_true", default=None, help="one channel instead of RGB"
    )
    p.add_argument(
        "--frame-skip",
        type=bounded(int, 1, MAX_FRAME_SKIP),
        default=None,
        help="repeat each action N times",
    )
    p.add_argument(
        "--max-episode-steps",
        type=bounded(int, 1, MAX_EPISODE_STEPS),
        default=None,
        help="override the time limit",
    )
    p.add_argument(
        "--env-kwarg",
        action="append",
        type=parse_env_kwarg,
        metavar="KEY=VALUE",
        help="passed to gym.make (repeatable)",
    )


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    """``--backend auto|gymnasium|envpool``."""
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "gymnasium", "envpool"],
        help="library that steps the env: envpool (C++, CarRacing-v3 and Atari, several times "
        "faster) or gymnasium (the reference); auto: envpool where installed and able",
    )


def given_env_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``make_env`` options the command line gives explicitly (backend always)."""
    given: dict[str, Any] = {
        "frame_size": args.frame_size,
        "crop": args.crop,
        "grayscale": args.grayscale,
        "frame_skip": args.frame_skip,
        "max_episode_steps": args.max_episode_steps,
        "env_kwargs": parse_env_kwargs(args.env_kwarg) if args.env_kwarg else None,
    }
    return {k: v for k, v in given.items() if v is not None} | {"backend": args.backend}


def env_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """A new env spec's options: the env's recommended ones, then what the command line gives."""
    from envs.factory import recommended_options

    return recommended_options(args.env, given_env_options(args))


def add_cluster_arguments(p: argparse.ArgumentParser, per_run: bool = False) -> None:
    """``--cluster`` (local processes, or Ray: docs/scaling.md); with ``per_run``, what each
    run asks of the Ray cluster."""
    p.add_argument(
        "--cluster",
        default="local",
        help="local (default) | ray (join this machine's Ray cluster, or start one) | a Ray "
        "address HOST:6379 or ray://HOST:10001; needs the [ray] extra",
    )
    if per_run:
        p.add_argument(
            "--cpus-per-run",
            type=bounded(float, 0.0, 1024, low_open=True),
            default=1.0,
            help="with --cluster: CPUs (and torch threads) per run (default 1)",
        )
        p.add_argument(
            "--gpus-per-run",
            type=bounded(float, 0.0, 64),
            default=0.0,
            help="with --cluster: GPUs per run; fractions share one (default 0)",
        )
