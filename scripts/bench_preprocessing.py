"""Per-frame cost of make_env's preprocessing chain against the alternatives, on the same frames.

Frames are recorded once from the real envs (random actions), then replayed by a stub env, so
each arm pays for its wrappers alone and sees exactly the same pixels. For each case the arms
are timed in alternating blocks of ``--steps`` ``env.step`` calls within this process, the
first arm rotating from round to round. Printed: the median microseconds per step over
``--rounds`` rounds, the median of the per-round ratios to the first arm, and how far each
arm's frames are from the first arm's.

Arms:

* ``one pass``: every step in one wrapper, :class:`envs.preprocessing.FrameTransform` (what
  the batched envpool VecEnv applies, and make_env's former single wrapper), after the
  former ``render()`` wrapper where frames come from ``render()``;
* ``make_env``: the chain ``make_env`` builds: gymnasium's ``AddRenderObservation`` where
  frames come from ``render()``, then :func:`envs.preprocessing.preprocess_frames`
  (``FramePreprocess`` for crop and grayscale, gymnasium's ``ResizeObservation``);
* ``gymnasium gray``: gymnasium's ``GrayscaleObservation`` in place of ``FramePreprocess``'s
  grayscale;
* frame skip 2: the former ``ActionRepeat`` loop against gymnasium's ``RepeatAction``.

Cases: CarRacing-v3 96x96, crop (0, 12, 0, 0), to 64x64, RGB and grayscale; CartPole-v1
frames from ``render()`` (400x600) to 64x64, RGB and grayscale; frame skip 2 on raw CarRacing
frames. The stub's own cost (``replay``) is printed as a floor, and one real env step for
scale.

    python scripts/bench_preprocessing.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any, SupportsFloat

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import (
    AddRenderObservation,
    GrayscaleObservation,
    RepeatAction,
    ResizeObservation,
    TransformObservation,
)

from envs.preprocessing import FramePreprocess, FrameTransform, preprocess_frames
from worldvae.precision import machine_summary

CROP = (0, 12, 0, 0)
SIZE = (64, 64)


class Replay(gym.Env):
    """Replays recorded frames: as observations, or (``render_only``) from ``render()`` with a
    state-vector observation, as ``CartPole-v1`` with ``render_mode="rgb_array"`` does."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}  # noqa: RUF012

    def __init__(self, frames: list[np.ndarray], render_only: bool = False):
        self.frames = frames
        self.render_only = render_only
        self.render_mode = "rgb_array"
        self.action_space = spaces.Discrete(2)
        self.observation_space: spaces.Box = (
            spaces.Box(-1.0, 1.0, (4,), np.float32)
            if render_only
            else spaces.Box(0, 255, frames[0].shape, np.uint8)
        )
        self.i = 0
        self.state = np.zeros(4, np.float32)

    def _obs(self) -> Any:
        return self.state if self.render_only else self.frames[self.i]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.i = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        self.i = (self.i + 1) % len(self.frames)
        return self._obs(), 1.0, False, False, {}

    def render(self) -> np.ndarray:
        return self.frames[self.i]


def record(env_id: str, n: int, render: bool) -> tuple[list[np.ndarray], float]:
    """``n`` frames of ``env_id`` under random actions, and the env's median step time (s)."""
    env = gym.make(env_id, render_mode="rgb_array" if render else None)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    frames, times = [], []
    while len(frames) < n:
        frames.append(env.render() if render else obs)
        t = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if render:
            env.render()
        times.append(time.perf_counter() - t)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return frames, statistics.median(times)


class FormerRenderObservation(gym.ObservationWrapper):
    """The frame from ``render()`` as the observation: make_env's former wrapper."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        env.reset(seed=0)
        self.observation_space = spaces.Box(0, 255, env.render().shape, np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        return np.asarray(self.env.render(), dtype=np.uint8)


class FormerActionRepeat(gym.Wrapper):
    """Each action ``n`` times, rewards summed: make_env's former frame-skip wrapper."""

    def __init__(self, env: gym.Env, n: int):
        super().__init__(env)
        self.n = n

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        total = 0.0
        for _ in range(self.n):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


def one_pass(env: gym.Env, crop: Any, gray: bool) -> gym.Env:
    transform = FrameTransform(env.observation_space.shape, SIZE, crop, gray)
    return TransformObservation(env, transform, spaces.Box(0, 255, transform.out_shape, np.uint8))


def gymnasium_gray(env: gym.Env, crop: Any) -> gym.Env:
    return ResizeObservation(GrayscaleObservation(FramePreprocess(env, crop), keep_dim=True), SIZE)


def car_arms(frames: list[np.ndarray], gray: bool) -> dict[str, gym.Env]:
    arms = {
        "one pass": one_pass(Replay(frames), CROP, gray),
        "make_env": preprocess_frames(Replay(frames), SIZE, CROP, gray),
    }
    if gray:
        arms["gymnasium gray"] = gymnasium_gray(Replay(frames), CROP)
    return arms


def render_arms(frames: list[np.ndarray], gray: bool) -> dict[str, gym.Env]:
    arms = {
        "one pass": one_pass(FormerRenderObservation(Replay(frames, True)), None, gray),
        "make_env": preprocess_frames(AddRenderObservation(Replay(frames, True)), SIZE, None, gray),
    }
    if gray:
        arms["gymnasium gray"] = gymnasium_gray(AddRenderObservation(Replay(frames, True)), None)
    return arms


def skip_arms(frames: list[np.ndarray]) -> dict[str, gym.Env]:
    return {
        "former ActionRepeat": FormerActionRepeat(Replay(frames), 2),
        "gymnasium RepeatAction": RepeatAction(Replay(frames), 2),
    }


def time_block(env: gym.Env, steps: int) -> float:
    """Microseconds per ``env.step``."""
    step = env.step
    t = time.perf_counter()
    for _ in range(steps):
        step(0)
    return (time.perf_counter() - t) / steps * 1e6


def frames_of(env: gym.Env, n: int) -> np.ndarray:
    out = [env.reset(seed=0)[0]]
    out += [env.step(0)[0] for _ in range(n - 1)]
    return np.stack(out)


def compare(
    name: str, arms: dict[str, gym.Env], floor: gym.Env, n_frames: int, args: Any
) -> list[tuple[str, str, float, float, str]]:
    """Time ``arms`` (and the bare ``floor``) in alternating blocks; print and return rows."""
    names = list(arms)
    reference = frames_of(arms[names[0]], n_frames)
    diffs = {}
    for arm in names:
        out = frames_of(arms[arm], n_frames)
        if out.shape != reference.shape:
            diffs[arm] = f"shape {out.shape[1:]}"
            continue
        d = np.abs(out.astype(np.int16) - reference.astype(np.int16))
        diffs[arm] = "identical" if not d.any() else f"max {d.max()}, {np.mean(d > 0):.0%} of px"
    everyone: list[tuple[str, gym.Env]] = [("replay", floor), *arms.items()]
    for _, env in everyone:
        env.reset(seed=0)
        time_block(env, args.steps // 4)  # warm-up
    times: dict[str, list[float]] = {arm: [] for arm, _ in everyone}
    for r in range(args.rounds):
        k = r % len(everyone)
        for arm, env in everyone[k:] + everyone[:k]:
            times[arm].append(time_block(env, args.steps))
    rows = [(name, "replay", statistics.median(times["replay"]), float("nan"), "")]
    for arm in names:
        ratio = statistics.median(a / b for a, b in zip(times[arm], times[names[0]], strict=True))
        rows.append((name, arm, statistics.median(times[arm]), ratio, diffs[arm]))
    for row in rows:
        print(f"  {row[1]:<24} {row[2]:8.1f} us  x{row[3]:.2f}  {row[4]}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=200, help="frames recorded per env")
    p.add_argument("--steps", type=int, default=200, help="env.step calls in one timed block")
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--cases", nargs="+", type=int, help="run only these cases (1-5, in order)")
    p.add_argument("--cv2-threads", type=int, help="cv2.setNumThreads (default: OpenCV's own)")
    args = p.parse_args()
    if args.cv2_threads is not None:
        cv2.setNumThreads(args.cv2_threads)
    print(machine_summary(), flush=True)
    print(
        f"gymnasium {gym.__version__}, opencv {cv2.__version__} ({cv2.getNumThreads()} threads), "
        f"numpy {np.__version__}"
    )
    car, car_step = record("CarRacing-v3", args.frames, render=False)
    pole, pole_step = record("CartPole-v1", args.frames, render=True)
    print(
        f"one real step (median): CarRacing-v3 {car_step * 1e6:.0f} us, "
        f"CartPole-v1 with render() {pole_step * 1e6:.0f} us"
    )
    cases: list[tuple[str, Callable[[], dict[str, gym.Env]], gym.Env]] = [
        ("CarRacing crop -> 64x64 RGB", lambda: car_arms(car, False), Replay(car)),
        ("CarRacing crop -> 64x64 gray", lambda: car_arms(car, True), Replay(car)),
        ("CartPole render -> 64x64 RGB", lambda: render_arms(pole, False), Replay(pole)),
        ("CartPole render -> 64x64 gray", lambda: render_arms(pole, True), Replay(pole)),
        ("CarRacing raw, frame skip 2", lambda: skip_arms(car), Replay(car)),
    ]
    rows = []
    for k, (name, make_arms, floor) in enumerate(cases, 1):
        if args.cases and k not in args.cases:
            continue
        print(name, flush=True)
        rows += compare(name, make_arms(), floor, args.frames, args)
    print(
        f"\nus per env.step, medians of {args.rounds} blocks of {args.steps} steps; ratio: median "
        "of the per-round ratios to the case's first arm"
    )
    print(f"{'case':<30} {'arm':<24} {'us':>8} {'ratio':>6}  frames against the first arm")
    for name, arm, m, ratio, diff in rows:
        print(f"{name:<30} {arm:<24} {m:8.1f} {ratio:6.2f}  {diff}")


if __name__ == "__main__":
    main()
