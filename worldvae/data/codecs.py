"""How the members of an episode file are compressed.

An episode file is a zip archive of ``.npy`` members (see :mod:`worldvae.data.episodes`).
Two encodings of a member exist, and a reader tells them apart by the member's first bytes:

* format 1 (``zlib``, ``none``): the ``.npy`` bytes themselves, deflated by zip or stored;
  exactly what ``np.savez_compressed`` / ``np.savez`` write, so ``np.load`` reads them.
* format 2 (``zstd``): the member is stored (not deflated) and holds one Zstandard frame whose
  content is the ``.npy`` bytes (magic ``28 B5 2F FD`` where a ``.npy`` starts ``93 NUMPY``).
  The frame records its content size and an XXH64 checksum of the content.

In both, every member keeps its zip CRC-32 (over the stored bytes), which
:func:`worldvae.data.episodes.verify_episode` checks. zstd at level 3 compresses random-policy
CarRacing frames 5% smaller than zlib's level 6 for a sixth of its CPU time (about 1% of an
env step's), and decompresses them in 0.4 of zlib's time (``scripts/bench_collector.py``
prints the measurements; docs/benchmarks.md has them), which is why format 2 uses it.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CODECS = ("zstd", "zlib", "none")
DEFAULT_CODEC = "zstd"
ZSTD_LEVEL = 3
FORMAT_CODECS = {1: "zlib", 2: "zstd"}  # what a dataset of each format version compresses with
ByteStream = IO[bytes] | io.RawIOBase | io.BufferedIOBase  # what a member is read from
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same episode gives the same bytes


def check_codec(codec: str) -> None:
    """Refuse an unknown codec name.

    Raises:
        ValueError: naming the codecs there are.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown episode codec {codec!r}; choose one of {', '.join(CODECS)}")


def codec_of_format(format_version: int) -> str:
    """The codec that a dataset of ``format_version`` writes compressed episodes with.

    Raises:
        ValueError: a format version this code does not know (a dataset from newer code).
    """
    if format_version not in FORMAT_CODECS:
        raise ValueError(
            f"episode format {format_version} is newer than this worldvae knows "
            f"({max(FORMAT_CODECS)}); upgrade worldvae to write into this dataset"
        )
    return FORMAT_CODECS[format_version]


def zstandard_module(what: str = "zstd-compressed episode files") -> Any:
    """The ``zstandard`` package, imported on first use.

    Raises:
        ModuleNotFoundError: with the command that installs it.
    """
    try:
        import zstandard
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"{what} need the zstandard package: pip install 'zstandard>=0.22'"
        ) from e
    return zstandard


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (never pickled)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def zstd_npy(array: np.ndarray, level: int = ZSTD_LEVEL) -> bytes:
    """One zstd frame (content size and checksum recorded) of ``array``'s ``.npy`` bytes."""
    zstd = zstandard_module()
    return bytes(zstd.ZstdCompressor(level=level, write_checksum=True).compress(npy_bytes(array)))


def write_npz(path: str | Path, members: Mapping[str, np.ndarray], codec: str) -> None:
    """Write ``members`` as an ``.npz`` archive at ``path`` (not atomically: the caller writes
    to a temporary name). ``zlib`` and ``none`` write what ``np.savez_compressed`` and
    ``np.savez`` do; ``zstd`` stores each member as one zstd frame of its ``.npy`` bytes."""
    check_codec(codec)
    if codec != "zstd":
        save = np.savez_compressed if codec == "zlib" else np.savez
        save(path, **members)  # type: ignore[arg-type]
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in members.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, zstd_npy(array))


def is_zstd(head: bytes) -> bool:
    """Whether a member starting with ``head`` is a zstd frame (format 2)."""
    return head[: len(ZSTD_MAGIC)] == ZSTD_MAGIC


def read_npy_stream(stream: ByteStream) -> np.ndarray:
    """Read a ``.npy`` array from ``stream`` (Python objects refused).

    Raises:
        ValueError: the bytes are not a ``.npy`` array, or hold Python objects.
    """
    return np.lib.format.read_array(stream, allow_pickle=False)


class ZstdMemberReader(io.RawIOBase):
    """The content of a zstd frame as a binary stream; zstd's own errors (a damaged frame, a
    failed checksum) surface as ValueError, as numpy's do for a damaged ``.npy``."""

    def __init__(self, source: Any, closefd: bool = True):
        zstd = zstandard_module()
        self._errors = (zstd.ZstdError,)
        self._reader = zstd.ZstdDecompressor().stream_reader(
            source, read_across_frames=True, closefd=closefd
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return int(self._reader.readinto(buffer))
        except self._errors as e:
            raise ValueError(f"zstd frame is damaged ({e})") from e

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


def decode_zstd_member(raw: bytes) -> np.ndarray:
    """The array in a format-2 member: one zstd frame of ``.npy`` bytes, read in chunks (the
    whole content never sits in memory twice) and checked against the frame's checksum.

    Raises:
        ValueError: the frame is damaged, fails its checksum, holds more than one array, or
            what it holds is not a ``.npy`` array.
    """
    with ZstdMemberReader(raw, closefd=False) as reader:
        array = read_npy_stream(reader)
        if reader.read(1):
            raise ValueError("data follows the array in its zstd frame")
    return array


def open_npy_member(archive: zipfile.ZipFile, name: str) -> ByteStream:
    """A stream of member ``name``'s ``.npy`` bytes, whichever format it is in (for reading
    headers; a whole-array read should go through ``archive.read``, which checks the CRC)."""
    member = cast(zipfile.ZipExtFile, archive.open(name))
    if not is_zstd(member.peek(len(ZSTD_MAGIC))):
        return member
    return ZstdMemberReader(member, closefd=True)
