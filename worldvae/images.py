"""Image grids and PNG files, for dataset mosaics, reconstructions and traversals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from worldvae.atomic import atomic_path


def image_grid(frames: np.ndarray, n_cols: int = 8, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Tile frames into one RGB image.

    Args:
        frames: uint8 ``(N, H, W, C)`` with C in 1 or 3, or ``(rows, cols, H, W, C)``
            for an explicit layout.
        n_cols: columns when ``frames`` is 4-D.
        pad: pixels of white between tiles.
        scale: integer upscaling (nearest neighbour) so small frames are visible.

    Returns:
        uint8 ``(rows * (H + pad) + pad, cols * (W + pad) + pad, 3)``.
    """
    frames = np.asarray(frames)
    if frames.ndim == 4:
        n = len(frames)
        n_cols = max(1, min(n_cols, n))
        n_rows = -(-n // n_cols)
        blank = np.zeros((n_rows * n_cols - n, *frames.shape[1:]), frames.dtype)
        frames = np.concatenate([frames, blank]).reshape(n_rows, n_cols, *frames.shape[1:])
    if frames.ndim != 5 or frames.dtype != np.uint8:
        raise ValueError(
            f"image_grid expects uint8 (N, H, W, C) frames, got {frames.dtype} {frames.shape}"
        )
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    if scale > 1:
        frames = frames.repeat(scale, axis=2).repeat(scale, axis=3)
    rows, cols, h, w, _ = frames.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[y : y + h, x : x + w] = frames[r, c]
    return out


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image ``(H, W, 3)`` as PNG, atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
    return path
