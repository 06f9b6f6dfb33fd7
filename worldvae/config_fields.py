"""Helpers shared by the configuration dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Any


def reject_unknown_keys(cls: type, d: dict[str, Any], what: str) -> None:
    """Raise if ``d`` has keys that are not fields of the dataclass ``cls``.

    A typo in a configuration must fail loudly instead of falling back to a default.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known: {sorted(names)}")


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: tuple[Any, ...] | None = None,
    default_factory: Any = dataclasses.MISSING,
    max_len: int | None = None,
    flag: str | None = None,
) -> Any:
    """A dataclass field carrying its help text and valid range (the CLI is built from them).

    ``low``/``high`` bound the value (inclusive; ``low_open`` makes ``low`` exclusive) and
    ``choices`` lists its values; for a tuple field they bind every element, and ``max_len``
    makes it hold 1 to ``max_len``
    elements. :func:`check_ranges` enforces them in ``__post_init__`` and the command line at
    parse time. ``flag`` is the field's command-line flag when it is not ``--field-name``
    (see :func:`agents.cli.options.add_config_options`). Without a default the field is
    required.
    """
    metadata = {
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "choices": choices,
        "max_len": max_len,
        "flag": flag,
    }
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_from(
    cls: type,
    name: str,
    default: Any = dataclasses.MISSING,
    help: str | None = None,
    flag: str | None = None,
) -> Any:
    """An :func:`option` for the same quantity as the field ``name`` of the dataclass ``cls``:
    its range and choices, and unless given here its default and help text (not its flag)."""
    source = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = source.metadata
    return option(
        source.default if default is dataclasses.MISSING else default,
        meta["help"] if help is None else help,
        meta["low"],
        meta["high"],
        meta["low_open"],
        meta["choices"],
        max_len=meta["max_len"],
        flag=flag,
    )


def range_error(name: str, value: Any, meta: dict[str, Any]) -> str | None:
    """Why ``value`` is outside the range in ``meta`` (None when it is inside)."""
    low, high, low_open = meta.get("low"), meta.get("high"), meta.get("low_open", False)
    values = value if isinstance(value, (tuple, list)) else (value,)
    max_len = meta.get("max_len")
    if max_len is not None and isinstance(value, (tuple, list)) and not 1 <= len(value) <= max_len:
        return f"{name} must hold 1 to {max_len} values, got {len(value)}"
    for v in values:
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if v != v:  # NaN
            return f"{name} must be a number, got nan"
        if low is not None and (v <= low if low_open else v < low):
            return f"{name} must be {'>' if low_open else '>='} {low}, got {value}"
        if high is not None and v > high:
            return f"{name} must be <= {high}, got {value}"
    choices = meta.get("choices")
    bad = [v for v in values if v not in choices] if choices is not None else []
    if bad:  # a tuple field's choices bind every element, as its low and high do
        return f"{name} must be one of {', '.join(map(str, choices or ()))}; got {bad[0]!r}"
    return None


def check_ranges(obj: Any) -> None:
    """Raise ValueError for the first field of the dataclass ``obj`` outside its range."""
    for f in dataclasses.fields(obj):
        if "help" in f.metadata:
            message = range_error(f.name, getattr(obj, f.name), dict(f.metadata))
            if message:
                raise ValueError(f"{type(obj).__name__}: {message}")
