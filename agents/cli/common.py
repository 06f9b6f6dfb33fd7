"""Shared argument parsing helpers for the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agents.cli.errors import UsageError
from agents.cli.options import add_config_options, bounded, field_help
from envs.backends import BACKENDS
from envs.cluster import uses_ray
from envs.registry import ENV_ID_HELP
from worldvae.envspec import MAX_FRAME_SIZE, MIN_FRAME_SIZE, EnvSpec
from worldvae.workers import local_workers_error


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
    """The env spec's frame options (:class:`~worldvae.envspec.EnvSpec`'s fields, their help
    and ranges). Each defaults to "not given" (None): what is not given comes from the
    recorded env spec, or for a new one from the env's recommended options."""
    p.add_argument(
        "--frame-size",
        type=bounded(int, MIN_FRAME_SIZE, MAX_FRAME_SIZE),
        default=None,
        help=f"square frame side, {MIN_FRAME_SIZE}..{MAX_FRAME_SIZE} (default 64)",
    )
    add_config_options(
        p,
        EnvSpec,
        only=("crop", "grayscale", "frame_skip", "max_episode_steps"),
        defaults=dict.fromkeys(("crop", "grayscale", "frame_skip", "max_episode_steps")),
    )
    p.add_argument(
        "--env-kwarg",
        action="append",
        type=parse_env_kwarg,
        metavar="KEY=VALUE",
        help=field_help(EnvSpec, "env_kwargs") + " (repeatable)",
    )


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    """``--backend``: ``auto`` or a name in :data:`envs.backends.ENV_BACKENDS`."""
    p.add_argument(
        "--backend", default="auto", choices=BACKENDS, help=field_help(EnvSpec, "backend")
    )


def env_choices(args: argparse.Namespace) -> dict[str, Any]:
    """The env spec fields the command line gives explicitly (backend always)."""
    given: dict[str, Any] = {
        "frame_size": args.frame_size,
        "crop": args.crop,
        "grayscale": args.grayscale,
        "frame_skip": args.frame_skip,
        "max_episode_steps": args.max_episode_steps,
        "env_kwargs": parse_env_kwargs(args.env_kwarg) if args.env_kwarg else None,
    }
    return {k: v for k, v in given.items() if v is not None} | {"backend": args.backend}


def new_env_spec(args: argparse.Namespace) -> EnvSpec:
    """A new env spec: the env's recommended one, then what the command line gives; its
    backend resolved."""
    from envs.factory import new_spec

    return new_spec(args.env, env_choices(args))


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


def add_workers_flags(p: argparse.ArgumentParser, *flags: tuple[str, str]) -> None:
    """Name the ``(flag, dest)`` pairs of ``p`` that count local worker processes, for
    :func:`check_worker_counts`."""
    p.set_defaults(worker_flags=flags)


def check_local_workers_flag(command: str, flag: str, value: int) -> None:
    """Refuse ``value`` local worker processes for ``flag`` outside 1 to 4 per core (at
    least 8): each worker holds its own env and model, and more of them than the cores can
    run only fill the memory.

    Raises:
        UsageError: naming the flag, the cap and how it derives from the cores.
    """
    message = local_workers_error(value, flag)
    if message:
        raise UsageError(f"{command}: {message} (see: worldvae {command} --help)")


def check_worker_counts(args: argparse.Namespace) -> None:
    """Check every worker-count flag the command named (:func:`add_workers_flags`) right after
    parsing, before anything runs; on a Ray cluster (``--cluster``) the counts are the
    cluster's, not this machine's, and are not capped here.

    Raises:
        UsageError: a count outside 1..the cap (see :func:`check_local_workers_flag`).
    """
    if uses_ray(getattr(args, "cluster", "local")):
        return
    for flag, dest in getattr(args, "worker_flags", ()):
        value = getattr(args, dest, None)
        if value is not None:
            check_local_workers_flag(args.command, flag, value)
