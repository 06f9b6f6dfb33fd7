"""Frame preprocessing wrappers: pixels from render(), crop, grayscale, resize, action repeat."""

from __future__ import annotations

from typing import Any, SupportsFloat

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces


def is_image_space(space: gym.Space) -> bool:
    """True for a uint8 ``(H, W, C)`` Box (C in 1, 3, 4) or a uint8 ``(H, W)`` Box."""
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[-1] in (1, 3, 4)))
    )


class PixelObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Replace the observation with the frame from ``env.render()`` (``render_mode="rgb_array"``).

    Makes state-vector envs such as ``CartPole-v1`` learnable from pixels.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        if env.render_mode != "rgb_array":
            raise ValueError(
                f"PixelObservation requires render_mode='rgb_array', got {env.render_mode!r}; "
                f"{env.spec.id if env.spec else env} cannot give frames otherwise"
            )
        gym.ObservationWrapper.__init__(self, env)
        self._shape: tuple[int, ...] | None = None
        frame_shape = self._probe_shape()
        self.observation_space = spaces.Box(0, 255, frame_shape, np.uint8)

    def _probe_shape(self) -> tuple[int, ...]:
        self.env.reset(seed=0)
        frame = self.env.render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3:
            raise ValueError(
                f"PixelObservation requires render() to return an (H, W, 3) array, got {type(frame)}"
            )
        return frame.shape

    def observation(self, observation: Any) -> np.ndarray:
        return np.asarray(self.env.render(), dtype=np.uint8)


class FrameTransform:
    """Crop, drop alpha, grayscale and resize uint8 frames; one frame or a batch.

    ``transform(frame)`` maps ``(H, W, C)`` (or ``(H, W)``) to ``(height, width, C_out)``;
    ``transform.batch(frames)`` maps ``(N, H, W, C)`` to ``(N, height, width, C_out)`` frame by
    frame through the same code, so a batched backend gives exactly the frames of the
    per-env wrapper. Resizing uses ``cv2.INTER_AREA``, which averages source pixels and does
    not alias.

    Args:
        in_shape: shape of the incoming frames, ``(H, W, C)`` or ``(H, W)``.
        size: output ``(height, width)``.
        crop: pixels removed from ``(top, bottom, left, right)`` before resizing.
        grayscale: output one channel (kept as ``C_out = 1``).

    Raises:
        ValueError: a crop that leaves no pixels.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        size: tuple[int, int] = (64, 64),
        crop: tuple[int, int, int, int] | None = None,
        grayscale: bool = False,
    ):
        h, w = in_shape[:2]
        top, bottom, left, right = crop or (0, 0, 0, 0)
        if min(top, bottom, left, right) < 0 or top + bottom >= h or left + right >= w:
            raise ValueError(f"FramePreprocess crop {crop} does not fit frames of {h}x{w}")
        self.rows = slice(top, h - bottom)
        self.cols = slice(left, w - right)
        self.size = (int(size[0]), int(size[1]))
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
    """Crop, grayscale and resize uint8 frames to ``(height, width, C)`` in one pass.

    Args:
        env: env with a uint8 image observation space.
        size: output ``(height, width)``.
        crop: pixels removed from ``(top, bottom, left, right)`` before resizing, e.g.
            ``(0, 12, 0, 0)`` drops CarRacing's dashboard strip.
        grayscale: output one channel (kept as ``C = 1``).

    The work is done by :class:`FrameTransform`, which batched backends share.
    """

    def __init__(
        self,
        env: gym.Env,
        size: tuple[int, int] = (64, 64),
        crop: tuple[int, int, int, int] | None = None,
        grayscale: bool = False,
    ):
        gym.utils.RecordConstructorArgs.__init__(self, size=size, crop=crop, grayscale=grayscale)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not is_image_space(space) or space.shape is None:
            raise ValueError(
                f"FramePreprocess requires a uint8 (H, W, C) Box observation space, got {space}"
            )
        self.transform = FrameTransform(space.shape, size=size, crop=crop, grayscale=grayscale)
        self.observation_space = spaces.Box(0, 255, self.transform.out_shape, np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return self.transform(observation)


class ActionRepeat(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Repeat each action ``n`` times, summing rewards; stops early when the episode ends."""

    def __init__(self, env: gym.Env, n: int):
        if n < 1:
            raise ValueError(f"ActionRepeat requires n >= 1, got {n}")
        gym.utils.RecordConstructorArgs.__init__(self, n=n)
        gym.Wrapper.__init__(self, env)
        self.n = n

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        total = 0.0
        for _ in range(self.n):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info
