"""One episode on disk: a NumPy ``.npz`` archive, written atomically.

An episode of ``T`` steps holds

============  ===============  =======  ============================================
key           shape            dtype    meaning
============  ===============  =======  ============================================
frames        (T + 1, H, W, C)  uint8   observation before each step, plus the last
actions       (T, *A)           any     action taken at each step
rewards       (T,)              float32 reward after each step
terminated    (T,)              bool    episode ended by the environment
truncated     (T,)              bool    episode cut by a time limit
seed          ()                int64   seed the episode was reset with
states        (T + 1, S)        float32 optional: the env's true state at each frame
============  ===============  =======  ============================================

``states`` is present when the dataset was collected with ``record_state``; its factor names
are in the manifest (``state_names``).

Every member of the archive carries a CRC-32 that is checked when it is read, so a flipped
byte or a truncated file raises :class:`CorruptEpisodeError` naming the file. Archives are
read with ``allow_pickle=False``: an episode file never executes code.

Compressed episodes are written in format 2: each member one zstd frame of its ``.npy`` bytes.
Files of format 1 (zlib, as ``np.savez_compressed`` writes) and uncompressed ones read as
before; :mod:`worldvae.data.codecs` describes both.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldvae.atomic import atomic_path
from worldvae.data.codecs import (
    DEFAULT_CODEC,
    check_codec,
    decode_zstd_member,
    is_zstd,
    open_npy_member,
    write_npz,
)

EPISODE_KEYS = ("frames", "actions", "rewards", "terminated", "truncated", "seed")


class CorruptEpisodeError(RuntimeError):
    """An episode file cannot be read back intact."""


@dataclass(frozen=True)
class Episode:
    """A whole episode in memory; see the module docstring for shapes."""

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    seed: int
    states: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = len(self.rewards)
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4:
            raise ValueError(
                f"Episode frames must be uint8 (T+1, H, W, C), got {self.frames.dtype} "
                f"{self.frames.shape}"
            )
        if len(self.frames) != t + 1:
            raise ValueError(
                f"Episode has {t} steps, so it needs {t + 1} frames, got {len(self.frames)}"
            )
        for name in ("actions", "terminated", "truncated"):
            if len(getattr(self, name)) != t:
                raise ValueError(
                    f"Episode {name} has length {len(getattr(self, name))}, expected {t}"
                )
        if self.states is not None and (
            self.states.dtype != np.float32 or self.states.ndim != 2 or len(self.states) != t + 1
        ):
            raise ValueError(
                f"Episode states must be float32 (T+1, S) = ({t + 1}, S), got "
                f"{self.states.dtype} {self.states.shape}"
            )

    @property
    def length(self) -> int:
        """Number of steps ``T``."""
        return len(self.rewards)

    @property
    def episode_return(self) -> float:
        """Sum of rewards."""
        return float(self.rewards.sum(dtype=np.float64))


def write_episode(
    path: str | Path, episode: Episode, compress: bool = True, codec: str = DEFAULT_CODEC
) -> None:
    """Write ``episode`` to ``path`` (``.npz``) atomically; a kill leaves no partial file.

    Args:
        path: the file to write.
        episode: what to write.
        compress: compress the members with ``codec``; False stores them as they are.
        codec: ``"zstd"`` (format 2) or ``"zlib"`` (format 1, what ``np.savez_compressed``
            writes); see :mod:`worldvae.data.codecs`.
    """
    check_codec(codec)
    members: dict[str, Any] = {
        "frames": episode.frames,
        "actions": episode.actions,
        "rewards": episode.rewards.astype(np.float32),
        "terminated": episode.terminated.astype(bool),
        "truncated": episode.truncated.astype(bool),
        "seed": np.int64(episode.seed),
    }
    if episode.states is not None:
        members["states"] = episode.states
    with atomic_path(path) as tmp:
        write_npz(tmp, members, codec if compress else "none")


def _member_array(value: np.ndarray | bytes) -> np.ndarray:
    """What ``NpzFile[key]`` gave, as an array: a format-2 member comes back as its raw
    (CRC-checked) bytes, a zstd frame of ``.npy`` bytes, and is decoded here.

    Raises:
        ValueError: the member is neither a ``.npy`` array nor a zstd frame of one.
    """
    if isinstance(value, np.ndarray):
        return value
    if not is_zstd(value):
        raise ValueError("a member is neither a .npy array nor a zstd frame of one")
    return decode_zstd_member(value)


def _open(path: Path) -> np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CorruptEpisodeError(
            f"episode file {path} is corrupt or truncated ({e}); delete it and re-run the "
            "collect command to re-collect it, or load with skip_corrupt=True"
        ) from e


def read_episode(path: str | Path, keys: tuple[str, ...] = EPISODE_KEYS) -> dict[str, np.ndarray]:
    """Read the given members of an episode file, verifying each one's CRC.

    Raises:
        CorruptEpisodeError: the file is truncated, fails its checksum, or lacks a member.
    """
    path = Path(path)
    with _open(path) as archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise CorruptEpisodeError(f"episode file {path} lacks {missing}; it is not an episode")
        try:
            return {k: _member_array(archive[k]) for k in keys}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise CorruptEpisodeError(
                f"episode file {path} is corrupt ({e}); delete it and re-run the collect command "
                "to re-collect it, or load with skip_corrupt=True"
            ) from e


def verify_episode(path: str | Path) -> None:
    """Check the CRC-32 of every member of an episode file (frames included) and that none
    of the required members is missing.

    Raises:
        CorruptEpisodeError: naming the file and the first member that fails.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member through its CRC check
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise CorruptEpisodeError(
            f"episode file {path} is corrupt or truncated ({e}); re-run the collect command "
            "to re-collect it"
        ) from e
    if bad is not None:
        raise CorruptEpisodeError(
            f"episode file {path}: member {bad} fails its CRC check; re-run the collect command "
            "to re-collect it"
        )
    missing = [k for k in EPISODE_KEYS if f"{k}.npy" not in names]
    if missing:
        raise CorruptEpisodeError(f"episode file {path} lacks {missing}; it is not an episode")


def has_states(path: str | Path) -> bool:
    """Whether an episode file holds the optional ``states`` member."""
    with _open(Path(path)) as archive:
        return "states" in archive.files


def load_episode(path: str | Path) -> Episode:
    """Read a whole episode file into an :class:`Episode` (``states`` None when absent)."""
    keys = EPISODE_KEYS + (("states",) if has_states(path) else ())
    d = read_episode(path, keys)
    return Episode(
        frames=d["frames"],
        actions=d["actions"],
        rewards=d["rewards"],
        terminated=d["terminated"],
        truncated=d["truncated"],
        seed=int(d["seed"]),
        states=d.get("states"),
    )


# ---- what an episode file must hold, read from its headers ------------------------------------


class InvalidEpisodeError(CorruptEpisodeError):
    """An episode file reads back intact but holds no usable episode: members of shapes,
    lengths or dtypes its dataset does not have, or Python objects."""


ArrayHeader = tuple[tuple[int, ...], np.dtype]

_KIND_NAMES = {"b": "bool", "i": "int", "u": "unsigned int", "f": "float"}


def read_headers(path: str | Path) -> dict[str, ArrayHeader]:
    """The shape and dtype of every member of an ``.npz`` file, from its ``.npy`` headers alone
    (a few hundred bytes of each member are decompressed; nothing is unpickled).

    Raises:
        CorruptEpisodeError: the file is not a readable archive of ``.npy`` members.
    """
    path = Path(path)
    headers: dict[str, ArrayHeader] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                with open_npy_member(archive, name) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                headers[name.removesuffix(".npy")] = (tuple(shape), dtype)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as e:
        raise CorruptEpisodeError(
            f"episode file {path} is corrupt or truncated ({e}); delete it and re-run the "
            "collect command to re-collect it"
        ) from e
    return headers


@dataclass(frozen=True)
class MemberSpec:
    """What one member of an episode file (or of a latent episode file) must be.

    Attributes:
        name: the member's name.
        kinds: the numpy dtype kinds it may have (``"f"`` float, ``"b"`` bool, ``"iu"`` ints).
        extra: None for a single value; else the member holds one entry per step plus
            ``extra`` (frames: 1, actions: 0).
        trailing: the shape of each entry, or None for any shape.
        dtype: the one dtype it must have, when only one will do (frames: ``uint8``).
        required: whether the file must hold it.
        source: where ``trailing`` comes from, for messages (``"the manifest"``).
    """

    name: str
    kinds: str
    extra: int | None = 0
    trailing: tuple[int, ...] | None = ()
    dtype: str | None = None
    required: bool = True
    source: str = ""

    def expected_shape(self) -> str:
        """The shape it must have, as text: ``(T+1, 64, 64, 3)``, ``(T, ...)``, ``()``."""
        if self.extra is None:
            return "()"
        steps = "T" + (f"+{self.extra}" if self.extra else "")
        rest = ["..."] if self.trailing is None else [str(n) for n in self.trailing]
        return f"({', '.join([steps, *rest])})"

    def problem(self, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
        """What is wrong with a member of this ``shape`` and ``dtype``, or None."""
        if dtype.hasobject:
            return (
                f"{self.name} holds Python objects (dtype {dtype}), which no worldvae command "
                "writes and which are never unpickled"
            )
        if dtype.kind not in self.kinds or (self.dtype is not None and dtype != self.dtype):
            want = self.dtype or " or ".join(_KIND_NAMES.get(k, k) for k in self.kinds)
            return f"{self.name} is {dtype}, expected {want}"
        fits = (
            shape == ()
            if self.extra is None
            else len(shape) >= 1 and (self.trailing is None or shape[1:] == self.trailing)
        )
        if not fits:
            source = f" from {self.source}" if self.source else ""
            return f"{self.name} has shape {shape}, expected {self.expected_shape()}{source}"
        return None


def layout_problems(headers: dict[str, ArrayHeader], layout: tuple[MemberSpec, ...]) -> list[str]:
    """Everything wrong with a file of these member ``headers`` against ``layout``: missing
    members, Python objects, dtypes, shapes, and members that disagree on the number of steps.
    Empty when the file fits."""
    problems: list[str] = []
    steps: dict[str, tuple[int, int]] = {}  # name -> (its length, the steps it implies)
    for spec in layout:
        if spec.name not in headers:
            if spec.required:
                problems.append(f"it lacks {spec.name}")
            continue
        shape, dtype = headers[spec.name]
        problem = spec.problem(shape, dtype)
        if problem is not None:
            problems.append(problem)
        elif spec.extra is not None:
            steps[spec.name] = (shape[0], shape[0] - spec.extra)
    if len({t for _, t in steps.values()}) > 1:
        extras = {s.name: s.extra for s in layout}
        lengths = ", ".join(
            f"{name} {n} ({'T' + (f'+{extras[name]}' if extras[name] else '')})"
            for name, (n, _) in steps.items()
        )
        problems.append(f"its members disagree on the number of steps T: {lengths}")
    return problems


def episode_layout(
    frame_shape: tuple[int, ...], state_names: list[str] | tuple[str, ...] | None = None
) -> tuple[MemberSpec, ...]:
    """The members of an episode file of a dataset with these ``frame_shape`` and
    ``state_names`` (its manifest's); see the module docstring."""
    n_states = None if state_names is None else len(state_names)
    return (
        MemberSpec("frames", "u", 1, tuple(frame_shape), "uint8", source="the manifest"),
        MemberSpec("actions", "biuf", 0, None),
        MemberSpec("rewards", "f"),
        MemberSpec("terminated", "b"),
        MemberSpec("truncated", "b"),
        MemberSpec("seed", "iu", None),
        MemberSpec(
            "states",
            "f",
            1,
            None if n_states is None else (n_states,),
            "float32",
            required=n_states is not None,
            source="the manifest's state_names",
        ),
    )


def check_layout(
    path: str | Path, layout: tuple[MemberSpec, ...], fix: str
) -> dict[str, ArrayHeader]:
    """Check an episode-like file's members against ``layout`` from their headers alone
    (cheap: nothing past the headers is decompressed); return the headers.

    Raises:
        CorruptEpisodeError: the file is unreadable.
        InvalidEpisodeError: it does not fit ``layout`` (every problem named, then ``fix``).
    """
    headers = read_headers(path)
    problems = layout_problems(headers, layout)
    if problems:
        raise InvalidEpisodeError(
            f"episode file {path} cannot be used: {'; '.join(problems)}; {fix}"
        )
    return headers


def check_episode(
    path: str | Path,
    frame_shape: tuple[int, ...],
    state_names: list[str] | tuple[str, ...] | None = None,
) -> dict[str, ArrayHeader]:
    """Check that a dataset's episode file holds an episode of its manifest's ``frame_shape``
    (and ``state_names``): :func:`check_layout` with :func:`episode_layout`.

    Raises:
        CorruptEpisodeError: the file is unreadable.
        InvalidEpisodeError: naming the file, what is wrong, and the fix.
    """
    root = Path(path).parent.parent
    fix = (
        f"remove it from the dataset (`worldvae data verify {root}` lists every unusable file) "
        "and re-run the collect command to re-collect it"
    )
    return check_layout(path, episode_layout(frame_shape, state_names), fix)
