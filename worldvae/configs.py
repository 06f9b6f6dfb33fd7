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
