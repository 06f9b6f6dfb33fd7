"""Video files of RGB frames: MP4 (OpenCV) or animated GIF (Pillow, else imageio), by extension.

Example:
    >>> frames = np.zeros((10, 48, 64, 3), np.uint8)
    >>> write_video("clip.gif", frames, fps=10)  # doctest: +SKIP
    PosixPath('clip.gif')
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from worldvae.atomic import atomic_path

VIDEO_SUFFIXES = (".mp4", ".gif")
GIF_HINT = "pip install pillow (or imageio)"


def check_video_path(path: str | Path) -> Path:
    """``path`` as a :class:`Path` when its extension names a format written here.

    Raises:
        ValueError: another extension (the ones accepted are named).
    """
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(
            f"a video is written as MP4 or GIF, chosen by the extension; got {path.name!r}: "
            f"name it {path.stem}.mp4 or {path.stem}.gif"
        )
    return path


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """A uint8 ``(H, W, 3)`` frame from ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or RGBA."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"video frames must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ValueError(f"video frames must be (H, W, C) with C in 1, 3, 4, got {frame.shape}")
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    return np.ascontiguousarray(frame[..., :3])


def fit_width(frame: np.ndarray, width: int | None) -> np.ndarray:
    """``frame`` scaled to ``width`` pixels wide, its aspect kept (unchanged if None or equal)."""
    if width is None or frame.shape[1] == width:
        return frame
    height = max(1, round(frame.shape[0] * width / frame.shape[1]))
    interpolation = cv2.INTER_AREA if width < frame.shape[1] else cv2.INTER_NEAREST
    return cv2.resize(frame, (width, height), interpolation=interpolation)


def put_label(frame: np.ndarray, text: str, corner: str = "top") -> np.ndarray:
    """A copy of the RGB ``frame`` with ``text`` written at its top (or ``"bottom"``) left,
    white on a dark band so that it reads on any background; the font follows the width."""
    out = frame.copy()
    h, w = out.shape[:2]
    scale = max(0.3, min(1.0, w / 640))
    thickness = 1 if scale < 0.7 else 2
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    band = th + base + 4
    y0 = 0 if corner == "top" else max(0, h - band)
    out[y0 : y0 + band, : tw + 6] //= 3  # a dark band under the text
    cv2.putText(
        out,
        text,
        (3, y0 + th + 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thickness,
        cv2.LINE_AA,
    )
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, pad: int = 2) -> np.ndarray:
    """Two RGB frames of one height next to each other, ``pad`` white pixels between them."""
    if left.shape[0] != right.shape[0]:
        raise ValueError(f"side_by_side needs frames of one height, got {left.shape} {right.shape}")
    gap = np.full((left.shape[0], pad, 3), 255, np.uint8)
    return np.concatenate([as_rgb(left), gap, as_rgb(right)], axis=1)


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = 30.0) -> Path:
    """Write uint8 frames ``(H, W, C)`` (RGB or one channel, all one size) atomically, as MP4
    (OpenCV's ``mp4v``; odd sides are padded to even, as the codec needs) or as an animated
    GIF (Pillow, else imageio), chosen by the extension of ``path``; return ``path``.

    Raises:
        ValueError: no frames, frames of different sizes, or another extension.
        ImportError: a GIF without Pillow or imageio (the install command is named).
        OSError: OpenCV cannot open an MP4 writer.
    """
    path = check_video_path(path)
    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    rgb = [as_rgb(f) for f in frames]
    if len({f.shape for f in rgb}) > 1:
        raise ValueError(f"the frames of {path} differ in size: {sorted({f.shape for f in rgb})}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        _write_gif(path, rgb, fps)
    else:
        _write_mp4(path, rgb, fps)
    return path


def _write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    h, w = frames[0].shape[:2]
    even_h, even_w = h + h % 2, w + w % 2
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (even_w, even_h))
        if not writer.isOpened():
            raise OSError(f"OpenCV could not open an MP4 writer for {path}")
        for frame in frames:
            if (even_h, even_w) != (h, w):
                frame = np.pad(frame, ((0, even_h - h), (0, even_w - w), (0, 0)))
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()


def gif_writer() -> str:
    """The library that writes GIFs here: ``"pillow"`` or ``"imageio"``.

    Raises:
        ImportError: neither is installed (the install command is named).
    """
    for name, module in (("pillow", "PIL"), ("imageio", "imageio")):
        if importlib.util.find_spec(module) is not None:
            return name
    raise ImportError(f"writing a GIF needs Pillow or imageio: {GIF_HINT}, or write an .mp4")


def _write_gif(path: Path, frames: list[np.ndarray], fps: float) -> None:
    duration_ms = max(20, round(1000 / fps))  # browsers slow down anything under 20 ms
    with atomic_path(path) as tmp:
        if gif_writer() == "pillow":
            from PIL import Image

            images = [Image.fromarray(f) for f in frames]
            images[0].save(
                tmp,
                format="GIF",
                save_all=True,
                append_images=images[1:],
                duration=duration_ms,
                loop=0,
                optimize=True,
            )
        else:
            import imageio.v3 as iio

            iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=duration_ms, loop=0)
