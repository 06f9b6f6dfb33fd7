"""Frame preprocessing: crop, drop alpha, grayscale and resize uint8 frames.

Per env, :func:`preprocess_frames` chains :class:`FramePreprocess` (crop, alpha, grayscale:
gymnasium has no crop, and its ``GrayscaleObservation`` weighs the channels differently) and
gymnasium's ``ResizeObservation``. :class:`FrameTransform` does all four steps on a batch for
backends that step many envs at once, with the same result.
"""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import RepeatAction, ResizeObservation

from worldvae.envspec import EnvSpec


def is_image_space(space: gym.Space) -> bool:
    """True for a uint8 ``(H, W, C)`` Box (C in 1, 3, 4) or a uint8 ``(H, W)`` Box."""
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[-1] in (1, 3, 4)))
    )


class FrameTransform:
    """Crop, drop alpha, grayscale and resize uint8 frames; one frame or a batch.

    ``transform(frame)`` maps ``(H, W, C)`` (or ``(H, W)``) to ``(height, width, C_out)``;
    ``transform.batch(frames)`` maps ``(N, H, W, C)`` to ``(N, height, width, C_out)`` frame by
    frame. The steps and their order are those of :func:`preprocess_frames` (grayscale with
    ``cv2.COLOR_RGB2GRAY``, then a ``cv2.INTER_AREA`` resize, as gymnasium's
    ``ResizeObservation`` does), so a batched backend gives exactly the frames of the per-env
    wrappers. ``INTER_AREA`` averages source pixels and does not alias.

    Args:
        in_shape: shape of the incoming frames, ``(H, W, C)`` or ``(H, W)``.
        size: output ``(height, width)``; None keeps the size left by the crop.
        crop: pixels removed from ``(top, bottom, left, right)`` before resizing.
        grayscale: output one channel (kept as ``C_out = 1``).

    Raises:
        ValueError: a crop that leaves no pixels.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        size: tuple[int, int] | None = None,
        crop: tuple[int, int, int, int] | None = None,
        grayscale: bool = False,
    ):
        h, w = in_shape[:2]
        top, bottom, left, right = crop or (0, 0, 0, 0)
        if min(top, bottom, left, right) < 0 or top + bottom >= h or left + right >= w:
            raise ValueError(f"FramePreprocess crop {crop} does not fit frames of {h}x{w}")
        self.rows = slice(top, h - bottom)
        self.cols = slice(left, w - right)
        cropped = (h - top - bottom, w - left - right)
        self.size = cropped if size is None else (int(size[0]), int(size[1]))
        self.grayscale = grayscale
        in_channels = 1 if len(in_shape) == 2 else in_shape[2]
        self.out_shape = (*self.size, 1 if grayscale else min(in_channels, 3))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """One frame ``(H, W, C)`` -> ``(height, width, C_out)`` uint8."""
        frame = frame[self.rows, self.cols]
        if frame.ndim == 3 and frame.shape[2] == 4:
            frame = frame[..., :3]
        if self.grayscale and frame.ndim == 3 and frame.shape[2] == 3:
            frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        h, w = self.size
        if frame.shape[:2] != (h, w):
            frame = cv2.resize(np.ascontiguousarray(frame), (w, h), interpolation=cv2.INTER_AREA)
        if frame.ndim == 2:
            frame = frame[:, :, None]
        return frame

    def batch(self, frames: np.ndarray) -> np.ndarray:
        """A batch ``(N, H, W, C)`` -> ``(N, height, width, C_out)`` uint8."""
        out = np.empty((len(frames), *self.out_shape), np.uint8)
        for i, frame in enumerate(frames):
            out[i] = self(frame)
        return out


class FramePreprocess(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Crop, drop alpha and grayscale uint8 frames to ``(H', W', C)``; no resizing.

    Args:
        env: env with a uint8 image observation space.
        crop: pixels removed from ``(top, bottom, left, right)``, e.g. ``(0, 12, 0, 0)`` drops
            CarRacing's dashboard strip.
        grayscale: output one channel (kept as ``C = 1``), by ``cv2.COLOR_RGB2GRAY``.

    The work is done by :class:`FrameTransform`, which batched backends share.
    """

    def __init__(
        self,
        env: gym.Env,
        crop: tuple[int, int, int, int] | None = None,
        grayscale: bool = False,
    ):
        gym.utils.RecordConstructorArgs.__init__(self, crop=crop, grayscale=grayscale)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not is_image_space(space) or space.shape is None:
            raise ValueError(
                f"FramePreprocess requires a uint8 (H, W, C) Box observation space, got {space}"
            )
        self.transform = FrameTransform(space.shape, crop=crop, grayscale=grayscale)
        self.observation_space = spaces.Box(0, 255, self.transform.out_shape, np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return self.transform(observation)


def preprocess_frames(
    env: gym.Env,
    size: tuple[int, int],
    crop: tuple[int, int, int, int] | None = None,
    grayscale: bool = False,
) -> gym.Env:
    """``env``'s uint8 frames cropped, grayscaled and resized to ``(height, width, C)``.

    :class:`FramePreprocess` (crop, alpha, grayscale), then gymnasium's ``ResizeObservation``
    (``cv2.INTER_AREA``): the chain ``make_env`` ends with, and the same frames as
    ``FrameTransform(shape, size, crop, grayscale)``.
    """
    height, width = size
    env = FramePreprocess(env, crop=crop, grayscale=grayscale)
    return ResizeObservation(env, (int(height), int(width)))


def apply_frame_spec(env: gym.Env, spec: EnvSpec) -> gym.Env:
    """``env``'s full-size frames as the spec asks: each action repeated ``frame_skip`` times
    (gymnasium's ``RepeatAction``, rewards summed), then :func:`preprocess_frames`."""
    if spec.frame_skip > 1:
        env = RepeatAction(env, spec.frame_skip)
    return preprocess_frames(env, spec.frame_size, crop=spec.crop, grayscale=spec.grayscale)
