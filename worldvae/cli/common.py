"""Shared argument parsing helpers for the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """``"0,12,0,0"`` -> ``(0, 12, 0, 0)`` (pixels off top, bottom, left, right)."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"--crop takes TOP,BOTTOM,LEFT,RIGHT, got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def parse_env_kwargs(items: list[str] | None) -> dict[str, Any]:
    """``["domain_randomize=true", "continuous=false"]`` -> dict, values read as JSON literals."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--env-kwarg takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_env_arguments(p: argparse.ArgumentParser) -> None:
    """The ``make_env`` options, shared by every command that builds an env."""
    p.add_argument("--env", required=True, help="gymnasium id, e.g. CarRacing-v3, ALE/Pong-v5")
    p.add_argument("--frame-size", type=int, default=64, help="square frame side (default 64)")
    p.add_argument("--crop", type=parse_crop, default=None, help="pixels off TOP,BOTTOM,LEFT,RIGHT")
    p.add_argument("--grayscale", action="store_true", help="one channel instead of RGB")
    p.add_argument("--frame-skip", type=int, default=1, help="repeat each action N times")
    p.add_argument("--max-episode-steps", type=int, default=None, help="override the time limit")
    p.add_argument(
        "--env-kwarg", action="append", metavar="KEY=VALUE", help="passed to gym.make (repeatable)"
    )


def env_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from envs.factory import env_options

    return env_options(
        frame_size=args.frame_size,
        crop=args.crop,
        grayscale=args.grayscale,
        frame_skip=args.frame_skip,
        max_episode_steps=args.max_episode_steps,
        env_kwargs=parse_env_kwargs(args.env_kwarg),
    )
