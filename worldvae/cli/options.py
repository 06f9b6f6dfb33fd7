"""Command-line options built from the configuration dataclasses, and range-checked types.

A field declared with :func:`worldvae.configs.option` carries its default, help text and valid
range; :func:`add_config_options` turns each such field into ``--field-name`` with that default,
that help and a parse-time range check, so the command line and the library share one source.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from worldvae.configs import range_error


def bounded(
    kind: type,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: tuple[Any, ...] | None = None,
) -> Callable[[str], Any]:
    """An argparse ``type`` that parses ``kind`` and refuses values outside the range."""
    meta = {"low": low, "high": high, "low_open": low_open, "choices": choices}

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        message = range_error("", value, meta)
        if message:
            raise argparse.ArgumentTypeError(message.strip())
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def int_list(low: float | None = None, high: float | None = None) -> Callable[[str], tuple]:
    """``"32,64,128"`` -> ``(32, 64, 128)``, each element range-checked."""
    one = bounded(int, low, high)

    def parse(text: str) -> tuple[int, ...]:
        parts = [p for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}")
        return tuple(one(p.strip()) for p in parts)

    parse.__name__ = "list"
    return parse


def field_bounds(cls: type, name: str) -> dict[str, Any]:
    """The ``low``/``high``/``low_open``/``choices`` of one :func:`option` field."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return {k: f.metadata.get(k) for k in ("low", "high", "low_open", "choices")}


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """``int | None`` -> ``(int, True)``; ``tuple[int, ...]`` -> ``(tuple, False)``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return (origin or annotation), False


def add_config_options(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    skip: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
) -> list[str]:
    """Add ``--name`` for every :func:`option` field of ``cls``; return the field names added.

    Booleans become flags (``--compile``); tuples comma lists; ``X | None`` options default to
    None. ``defaults`` replace a field's default on the command line only.
    """
    hints = typing.get_type_hints(cls)
    added = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or f.name in skip:
            continue
        kind, _ = _base_type(hints[f.name])
        default = (defaults or {}).get(f.name, f.default)
        flag = "--" + f.name.replace("_", "-")
        meta = field_bounds(cls, f.name)
        shown = "" if default is None else f" (default {_show(default)})"
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=default, help=f.metadata["help"])
        elif kind is tuple:
            parser.add_argument(
                flag,
                type=int_list(meta["low"], meta["high"]),
                default=default,
                help=f.metadata["help"] + shown,
            )
        elif meta["choices"] is not None:
            parser.add_argument(
                flag, default=default, choices=meta["choices"], help=f.metadata["help"] + shown
            )
        elif kind in (int, float):
            parser.add_argument(
                flag,
                type=bounded(kind, meta["low"], meta["high"], meta["low_open"]),
                default=default,
                help=f.metadata["help"] + shown,
            )
        else:
            parser.add_argument(flag, type=kind, default=default, help=f.metadata["help"] + shown)
        added.append(f.name)
    return added


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def config_values(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The parsed values of the fields ``names`` (as added by :func:`add_config_options`)."""
    return {n: getattr(args, n) for n in names}
