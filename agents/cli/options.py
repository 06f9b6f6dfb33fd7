"""Command-line options built from the configuration dataclasses, and range-checked types.

A field declared with :func:`worldvae.config_fields.option` carries its default, help text, valid
range and (where it is not ``--field-name``) its flag; :func:`add_config_options` turns each
such field into a flag with that default, that help and a parse-time range check, so the
command line and the library share one source.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from worldvae.config_fields import range_error


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


def number_list(
    kind: type = int,
    low: float | None = None,
    high: float | None = None,
    length: int | None = None,
    low_open: bool = False,
) -> Callable[[str], tuple]:
    """``"32,64,128"`` -> ``(32, 64, 128)``: a comma list of ``kind``, each range-checked
    (``length`` of them when given)."""
    one = bounded(kind, low, high, low_open)
    what = "integers" if kind is int else "numbers"

    def parse(text: str) -> tuple[Any, ...]:
        parts = [p for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma list of {what}, got {text!r}")
        if length is not None and len(parts) != length:
            raise argparse.ArgumentTypeError(f"expected {length} {what}, got {text!r}")
        return tuple(one(p.strip()) for p in parts)

    parse.__name__ = "list"
    return parse


def str_list(text: str) -> tuple[str, ...]:
    """``"pixel,latent"`` -> ``("pixel", "latent")``."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    if not parts:
        raise argparse.ArgumentTypeError(f"expected a comma list, got {text!r}")
    return parts


def choice_list(choices: tuple[Any, ...]) -> Callable[[str], tuple[str, ...]]:
    """``"ae,vae"`` -> ``("ae", "vae")``: a comma list of which each item is one of ``choices``."""

    def parse(text: str) -> tuple[str, ...]:
        parts = str_list(text)
        bad = [p for p in parts if p not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"{bad[0]!r} is not one of {', '.join(map(str, choices))}"
            )
        return parts

    parse.__name__ = "list"
    return parse


def count_range(high: int) -> Callable[[str], tuple[int, ...]]:
    """``"3"`` -> ``(0, 1, 2)``: a tuple field given as its length N (1..``high``)."""
    one = bounded(int, 1, high)

    def parse(text: str) -> tuple[int, ...]:
        return tuple(range(one(text)))

    parse.__name__ = "count"
    return parse


def field_bounds(cls: type, name: str) -> dict[str, Any]:
    """The ``low``/``high``/``low_open``/``choices``/``max_len`` of one :func:`option` field."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return {k: f.metadata.get(k) for k in ("low", "high", "low_open", "choices", "max_len")}


def field_help(cls: type, name: str) -> str:
    """The help text of one :func:`option` field of ``cls``."""
    return str({f.name: f for f in dataclasses.fields(cls)}[name].metadata["help"])


def field_flag(f: dataclasses.Field) -> str:
    """The command-line flag of an :func:`option` field: its own, else ``--field-name``
    (``--no-field-name`` for a boolean that defaults to True, the flag that turns it off)."""
    if f.metadata.get("flag"):
        return str(f.metadata["flag"])
    prefix = "--no-" if f.default is True else "--"
    return prefix + f.name.replace("_", "-")


def _field_type(annotation: Any) -> tuple[Any, tuple[Any, ...], bool]:
    """``int | None`` -> ``(int, (), True)``; ``tuple[int, ...]`` -> ``(tuple, (int, ...), False)``."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation, optional = args[0], True
    origin = typing.get_origin(annotation)
    return (origin or annotation), typing.get_args(annotation), optional


def _declared_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default  # MISSING for a required field


def add_config_options(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    skip: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
    only: Iterable[str] | None = None,
    counts: Iterable[str] = (),
) -> list[str]:
    """Add a flag for every :func:`option` field of ``cls``; return the field names added.

    The flag is ``--field-name`` unless the field names its own (``option(flag=...)``); the
    value lands in ``args.field_name`` either way (see :func:`config_values`). Booleans become
    switches: ``--name`` turns on a field that defaults to False, ``--no-name`` (or the field's
    own flag) turns off one that defaults to True, and ``bool | None`` gets both. Tuples are
    comma lists; a tuple field named in ``counts`` is given as a count N, meaning
    ``(0, ..., N-1)`` (N up to the field's ``max_len``). ``X | None`` options default to None.
    A field without a default is required.

    ``defaults`` replace a field's default on the command line only; ``only`` limits the
    fields to those named, ``skip`` leaves those named out.
    """
    hints = typing.get_type_hints(cls)
    wanted = None if only is None else set(only)
    added = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or f.name in skip:
            continue
        if wanted is not None and f.name not in wanted:
            continue
        default = (defaults or {}).get(f.name, _declared_default(f))
        spec = argument_spec(cls, f, hints[f.name], default, f.name in set(counts))
        flag = field_flag(f)
        if "type" in spec and "metavar" not in spec:  # named after the flag, not the field
            spec["metavar"] = flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(flag, **spec)
        added.append(f.name)
    return added


def argument_spec(
    cls: type, f: dataclasses.Field, annotation: Any, default: Any, counted: bool
) -> dict[str, Any]:
    """``add_argument``'s keywords for the :func:`option` field ``f`` of ``cls``."""
    kind, args, optional = _field_type(annotation)
    declared = _declared_default(f)
    meta = field_bounds(cls, f.name)
    text = str(f.metadata["help"])
    spec: dict[str, Any] = {"dest": f.name}
    if default is dataclasses.MISSING:
        spec["required"] = True
    else:
        spec["default"] = default
    shown = "" if default in (None, dataclasses.MISSING) else f" (default {_show(default)})"
    if kind is bool:
        if declared is None and optional:
            spec.update(action=argparse.BooleanOptionalAction, help=text)
        elif declared is True:
            spec.update(
                action="store_false", help=f"{text} (on by default; this flag turns it off)"
            )
        else:
            spec.update(action="store_true", help=text)
    elif kind is tuple and counted:
        if meta["max_len"] is None:
            raise ValueError(f"{cls.__name__}.{f.name} needs a max_len to be given as a count")
        if isinstance(default, tuple):
            shown = f" (default {len(default)})"
        spec.update(
            type=count_range(meta["max_len"]), metavar="N", help=f"{text}; N means 0..N-1{shown}"
        )
    elif kind is tuple:
        element = args[0] if args else str
        fixed = len(args) if args and args[-1] is not Ellipsis else None
        if element is str:
            parse = str_list if meta["choices"] is None else choice_list(meta["choices"])
        else:
            number = float if element is float else int
            parse = number_list(number, meta["low"], meta["high"], fixed, meta["low_open"])
        spec.update(type=parse, help=text + shown)
    elif meta["choices"] is not None:
        spec.update(choices=meta["choices"], help=text + shown)
    elif kind in (int, float):
        spec.update(
            type=bounded(kind, meta["low"], meta["high"], meta["low_open"]), help=text + shown
        )
    else:
        spec.update(type=kind, help=text + shown)
    return spec


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def config_values(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The parsed values of the fields ``names`` (as added by :func:`add_config_options`)."""
    return {n: getattr(args, n) for n in names}
