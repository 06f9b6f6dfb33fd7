"""Frame preprocessing: crop, drop alpha, grayscale and resize uint8 frames.

Per env, :func:`preprocess_frames` chains :class:`FramePreprocess` (crop, alpha, grayscale:
gymnasium has no crop, and its ``GrayscaleObservation`` weighs the channels differently) and
gymnasium's ``ResizeObservation``. :class:`FrameTransform` does all four steps on a batch for
backends that step many envs at once, with the same result. A batched backend that steps its
envs one by one hands each group of finished envs on as a :class:`FrameChunk` (to a consumer
registered through a :class:`FrameChunkSource`), so that their frames are encoded while the
others still step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import RepeatAction, ResizeObservation

from worldvae.envspec import EnvSpec, as_frame_size


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


@dataclass(frozen=True)
class FrameChunk:
    """Preprocessed frames of the envs whose step has finished, handed on while others step.

    Attributes:
        env_ids: the envs, int ``(K,)``.
        done_ids: those of them whose episode ended in this step, int ``(D,)``.
        frames: uint8 ``(K + D, height, width, C)``: the observations of ``env_ids`` (for a
            finished episode, the first frame of the next one), then the terminal frames of
            ``done_ids``, in that order; preprocessed together by one
            :meth:`FrameTransform.batch` call.
    """

    env_ids: np.ndarray
    done_ids: np.ndarray
    frames: np.ndarray


FrameConsumer = Callable[[FrameChunk], None]


@runtime_checkable
class FrameChunkSource(Protocol):
    """A VecEnv that hands each step's frames to a consumer in chunks as its envs finish.

    Within ``with venv.frame_consumer(consume, min_chunk):`` every ``step_wait`` calls
    ``consume`` with chunks of at least ``min_chunk`` envs (the last one may be smaller), each
    env exactly once, before it returns the same frames as usual.
    """

    def frame_consumer(
        self, consume: FrameConsumer, min_chunk: int = 1
    ) -> AbstractContextManager[None]: ...


class FramePreprocess(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Crop, drop alpha, grayscale and (with ``size``) resize uint8 frames to ``(H', W', C)``.

    Args:
        env: env with a uint8 image observation space.
        crop: pixels removed from ``(top, bottom, left, right)``, e.g. ``(0, 12, 0, 0)`` drops
            CarRacing's dashboard strip; a list does as well (what a YAML file gives).
        grayscale: output one channel (kept as ``C = 1``), by ``cv2.COLOR_RGB2GRAY``.
        size: output ``(height, width)``, or one int for square frames (``cv2.INTER_AREA``,
            as gymnasium's ``ResizeObservation``); None keeps the size left by the crop.

    The work is done by :class:`FrameTransform`, which batched backends share. The arguments
    are plain YAML literals, so the wrapper can be named in an RL zoo ``env_wrapper``::

        env_wrapper:
          - envs.preprocessing.FramePreprocess: {crop: [0, 12, 0, 0], grayscale: true, size: 64}
    """

    def __init__(
        self,
        env: gym.Env,
        crop: Sequence[int] | None = None,
        grayscale: bool = False,
        size: int | Sequence[int] | None = None,
    ):
        gym.utils.RecordConstructorArgs.__init__(self, crop=crop, grayscale=grayscale, size=size)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not is_image_space(space) or space.shape is None:
            raise ValueError(
                f"FramePreprocess requires a uint8 (H, W, C) Box observation space, got {space}"
            )
        if crop is not None and len(crop) != 4:
            raise ValueError(f"FramePreprocess crop must be (top, bottom, left, right), got {crop}")
        self.transform = FrameTransform(
            space.shape,
            size=None if size is None else as_frame_size(size),
            crop=None if crop is None else (int(crop[0]), int(crop[1]), int(crop[2]), int(crop[3])),
            grayscale=bool(grayscale),
        )
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
