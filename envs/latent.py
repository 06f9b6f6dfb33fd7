"""Latent observations: frames encoded by a pretrained autoencoder, for RL agents.

``LatentObservation`` wraps one gymnasium env; ``VecLatentObservation`` wraps an SB3 VecEnv
and encodes the frames of all its envs in batched calls (on the GPU when present). Both
build their observation from the same :class:`LatentHistory`, so on the same seeds they give
the same observations.

Over a VecEnv that hands its frames on in chunks as its envs finish
(:class:`~envs.preprocessing.FrameChunkSource`: ``EnvpoolVecEnv(..., async_step=True)``),
``VecLatentObservation(..., chunk_size=k)`` encodes each chunk of ``k`` envs while the other
envs still step. That pays where the env leaves cores free; on two cores envpool's threads
already fill both and every extra encode call costs more than the overlap saves, so by
default the whole step is encoded at once (docs/benchmarks.md, "Latent wrapper over envpool:
encoding while the envs step").

Both wrappers encode through a :class:`~worldvae.vae.inference.FrameEncoder`
(:func:`frame_encoder`): ``runtime="auto"`` runs an autoencoder's posterior mean on ONNX
Runtime on the CPU where it is installed, PyTorch elsewhere; sampled latents and PCA codes always
take the PyTorch path. The runtimes agree within :data:`~worldvae.vae.inference.TOLERANCE`,
so an agent trained on one plays on the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from envs.gymnasium_env import recorded_frames
from envs.preprocessing import FrameChunk, FrameChunkSource, is_image_space
from worldvae.encoders import Encoder, load_encoder
from worldvae.envspec import EnvSpec, read_env_spec
from worldvae.precision import autocast, resolve_precision
from worldvae.vae import Autoencoder
from worldvae.vae.inference import RUNTIMES, FrameEncoder, encoder_runtime

# torch's intra-op threads for VecLatentObservation's encode (the env keeps one thread per
# core). One: on the 2-core Xeon, with two, libgomp's second thread spun for about 4 ms of CPU
# after every encode, taking a core from envpool's threads, and under load an 8-frame encode
# cost 38 ms of CPU on two threads against 3.5 ms on one (docs/benchmarks.md, "Latent wrapper
# over envpool: encoding while the envs step").
ENCODE_THREADS = 1


@contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n_threads`` within the block (None: left as they are)."""
    before = torch.get_num_threads()
    if n_threads is None or n_threads == before:
        yield
        return
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_model(model: Encoder | str | Path, device: str = "auto") -> Encoder:
    """A loaded model (autoencoder or PCA), or a model / run / PCA directory to load, in eval
    mode and, for a network, with channels_last weights.

    The encoder's input is a channels_last view of the uint8 frames; with contiguous NCHW
    weights every convolution copied its weights to channels_last at every call, which on the
    2-core Xeon cost about a third of an 8-frame encode (same latents either way).
    """
    loaded = load_encoder(model, device=device) if isinstance(model, (str, Path)) else model
    if isinstance(loaded, torch.nn.Module):
        loaded.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return loaded.eval()


class CodeEncoder:
    """``model.encode(frames, sample=sample)`` under the precision's autocast: the PyTorch
    path for what the inference runtimes do not cover (sampled latents, PCA codes).

    Attributes:
        name: ``"torch"``.
        precision: ``"fp32"`` or ``"bf16"``, as resolved on the model's device.
        latent_dim: size ``D`` of the codes.
    """

    name = "torch"

    def __init__(self, model: Encoder, precision: str = "auto", sample: bool = False):
        self.model = model
        self.device = getattr(model, "device", "cpu")
        self.precision = resolve_precision(precision, self.device)
        self.latent_dim = model.latent_dim
        self.sample = sample

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames ``(N, H, W, C)`` or ``(H, W, C)`` -> float32 ``(N, D)`` or ``(D,)``."""
        with autocast(self.device, self.precision):
            return self.model.encode(np.asarray(frames), sample=self.sample)


def frame_encoder(
    model: Encoder,
    runtime: str = "auto",
    precision: str = "auto",
    sample: bool = False,
    n_threads: int | None = None,
) -> FrameEncoder:
    """The :class:`~worldvae.vae.inference.FrameEncoder` a latent wrapper encodes with.

    An autoencoder's posterior mean runs on ``runtime``
    (:func:`~worldvae.vae.inference.encoder_runtime`: ``"auto"`` is ONNX Runtime on the CPU
    where installed, else PyTorch); sampled latents and PCA codes run on PyTorch
    (:class:`CodeEncoder`). ``n_threads``: a CPU runtime's threads (None: torch's setting).

    Raises:
        ValueError: an unknown runtime, or a CPU runtime named for what only PyTorch encodes.
        ImportError: a named runtime that is not installed.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if isinstance(model, Autoencoder) and not sample:
        return encoder_runtime(model, runtime, precision=precision, n_threads=n_threads)
    if runtime not in ("auto", "torch"):
        what = "sampled latents" if sample else f"a {type(model).__name__}'s codes"
        raise ValueError(
            f"runtime={runtime!r} encodes an autoencoder's posterior mean; {what} are encoded "
            "by PyTorch: use runtime='auto' or 'torch'"
        )
    return CodeEncoder(model, precision, sample)


def model_frames(
    wrapper: str, env: gym.Env, source: Encoder | str | Path, model: Encoder
) -> tuple[gym.Env, EnvSpec | None]:
    """``env`` giving the model's frames, and the env spec the model records (None without).

    An env whose frames have the model's shape is taken as it is (an env from
    ``make_env(spec)``). Otherwise, for a model given as a directory that records its env
    spec, ``env`` is taken for one that gives the raw frames of that env (as ``gym.make``
    makes it, e.g. in an RL zoo ``env_wrapper``) and the recorded preprocessing is applied
    (:func:`~envs.gymnasium_env.recorded_frames`, which refuses an env that disagrees with
    the spec, naming both).
    """
    spec = read_env_spec(source) if isinstance(source, (str, Path)) else None
    shape = tuple(env.observation_space.shape or ())
    if spec is None or shape == tuple(model.config.frame_shape):
        return env, spec
    return recorded_frames(env, spec, wrapper), spec


def check_frame_space(wrapper: str, space: gym.Space, model: Encoder) -> None:
    """Raise a clear error unless ``space`` holds uint8 frames of the model's shape."""
    if not is_image_space(space) or len(space.shape or ()) != 3:
        raise ValueError(f"{wrapper} requires a uint8 (H, W, C) Box observation space, got {space}")
    expected = tuple(model.config.frame_shape)
    if tuple(space.shape or ()) != expected:
        h, w, c = expected
        raise ValueError(
            f"{wrapper}: the model expects frames {expected}, the env gives {space.shape}; "
            f"make the env with make_env(..., frame_size=({h}, {w})"
            f"{', grayscale=True' if c == 1 else ''}) or use a model trained on these frames"
        )


def encode_step(
    encode: Callable[[np.ndarray], np.ndarray],
    frames: np.ndarray,
    dones: np.ndarray,
    infos: Sequence[dict[str, Any]],
) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Encode a VecEnv step's frames and the terminal frames of finished episodes in one call.

    Returns the latents of ``frames`` ``(N, D)``, the envs whose episode ended with a
    ``terminal_observation`` in their info, and the latents of those terminal frames.
    """
    n = len(frames)
    done_idx = [i for i in range(n) if dones[i] and "terminal_observation" in infos[i]]
    batch = [frames] + (
        [np.stack([infos[i]["terminal_observation"] for i in done_idx])] if done_idx else []
    )
    z_all = encode(np.concatenate(batch))
    return z_all[:n], done_idx, z_all[n:]


def chunk_source(venv: VecEnv) -> FrameChunkSource | None:
    """The VecEnv under ``venv`` that hands its frames on in chunks, when only wrappers that
    leave observations as they are (``VecMonitor``) stand between; None otherwise."""
    while type(venv) is VecMonitor:
        venv = venv.venv
    return venv if isinstance(venv, FrameChunkSource) else None


class LatentHistory:
    """Buffers of the last ``frame_stack`` latents and ``action_history`` actions of each env.

    The observation of env ``i`` is ``[z_{t-k+1}, ..., z_t, a_{t-n}, ..., a_{t-1}]`` as float32
    ``(k * D + n * A,)``; Discrete actions are one-hot (``A = n_actions``), Box actions raw.
    After a reset the stack holds zeros and the first latent, and the actions are zero: an
    episode starts as SB3's ``VecFrameStack`` starts the pixel arm's (zero frames before the
    first), so every arm meets the same kind of start (a zero latent is the prior's mean).

    The batched methods (:meth:`push_many`, :meth:`reset_many`, :meth:`observations`) update
    and read many envs in one array operation each; :meth:`push`, :meth:`reset` and
    :meth:`observation` are the same for one env.
    """

    def __init__(
        self,
        n_envs: int,
        latent_dim: int,
        action_space: gym.Space,
        frame_stack: int,
        action_history: int,
    ):
        if frame_stack < 1 or action_history < 0:
            raise ValueError("frame_stack must be >= 1 and action_history >= 0")
        if action_history and not isinstance(action_space, (spaces.Discrete, spaces.Box)):
            raise ValueError(
                f"action history needs a Discrete or Box action space, got {action_space}"
            )
        self.k, self.n, self.d = frame_stack, action_history, latent_dim
        self.action_space = action_space
        if isinstance(action_space, spaces.Discrete):
            self.a = int(action_space.n)
        else:
            self.a = int(np.prod(action_space.shape or ())) if action_history else 0
        self.latents = np.zeros((n_envs, frame_stack, latent_dim), np.float32)
        self.actions = np.zeros((n_envs, max(action_history, 1), max(self.a, 1)), np.float32)

    @property
    def size(self) -> int:
        return self.k * self.d + self.n * self.a

    def space(self) -> spaces.Box:
        return spaces.Box(-np.inf, np.inf, (self.size,), np.float32)

    def encode_actions(self, actions: Any) -> np.ndarray:
        """Actions of ``m`` envs (``(m,)`` Discrete, ``(m, ...)`` Box) -> float32 ``(m, A)``."""
        actions = np.asarray(actions)
        if isinstance(self.action_space, spaces.Discrete):
            index = actions.reshape(-1).astype(np.int64) - int(self.action_space.start)
            one_hot = np.zeros((len(index), self.a), np.float32)
            one_hot[np.arange(len(index)), index] = 1.0
            return one_hot
        return actions.astype(np.float32).reshape(len(actions), -1)

    def reset_many(self, env_ids: np.ndarray, z: np.ndarray) -> None:
        """Start new episodes in envs ``env_ids`` ``(m,)`` from their first latents ``z``
        ``(m, D)``."""
        self.latents[env_ids] = 0.0
        self.latents[env_ids, -1] = z
        self.actions[env_ids] = 0.0

    def push_many(self, env_ids: np.ndarray, z: np.ndarray, actions: Any) -> None:
        """Append the latents ``z`` ``(m, D)`` of envs ``env_ids`` ``(m,)`` and the actions
        ``(m, ...)`` that led to them."""
        if self.k > 1:
            self.latents[env_ids, :-1] = self.latents[env_ids, 1:]
        self.latents[env_ids, -1] = z
        if self.n:
            if self.n > 1:
                self.actions[env_ids, :-1] = self.actions[env_ids, 1:]
            self.actions[env_ids, -1] = self.encode_actions(actions)

    def observations(self, env_ids: np.ndarray | None = None) -> np.ndarray:
        """Observations of envs ``env_ids`` (all when None), float32 ``(m, size)``."""
        latents = self.latents if env_ids is None else self.latents[env_ids]
        flat = latents.reshape(len(latents), -1)
        if not self.n:
            return flat.copy() if env_ids is None else flat
        actions = self.actions if env_ids is None else self.actions[env_ids]
        return np.concatenate([flat, actions.reshape(len(actions), -1)], axis=1)

    def reset(self, i: int, z: np.ndarray) -> None:
        self.reset_many(np.array([i]), np.asarray(z)[None])

    def push(self, i: int, z: np.ndarray, action: Any) -> None:
        self.push_many(np.array([i]), np.asarray(z)[None], np.asarray(action)[None])

    def observation(self, i: int) -> np.ndarray:
        return self.observations(np.array([i]))[0]


class LatentObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replace an env's uint8 frames with the autoencoder's latents.

    Args:
        env: an env from :func:`envs.make_env` (uint8 ``(H, W, C)`` frames of the model's
            shape); or, with a model directory that records its env spec, the env as
            ``gym.make`` gives it (raw frames, or ``render_mode="rgb_array"`` for an env whose
            observations are not frames): the recorded crop, grayscale, resize and frame
            skip are applied (:func:`model_frames`) and the spec is ``self.env_spec``.
        model: a loaded :class:`~worldvae.vae.Autoencoder`, or a model / run directory.
        frame_stack: number of latest latents concatenated (``k``).
        action_history: number of previous actions appended (``n``).
        sample: draw latents from the posterior instead of taking its mean.
        device: where a model given as a path is loaded (``"auto"``: CUDA when present).
        precision: ``"auto"`` (bf16 autocast on CUDA and AMX CPUs), ``"fp32"`` or
            ``"bf16"``; the resolved one is ``self.precision``.
        runtime: ``"auto"``, ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (:func:`frame_encoder`); the one
            chosen is ``self.runtime``.

    Observation space: float32 ``Box((k * D + n * A,))``.

    Example:
        >>> env = LatentObservation(make_env("CarRacing-v3"), "runs/vae/carracing")
        >>> obs, info = env.reset(seed=0)   # obs.shape == (32,)
        >>> raw = LatentObservation(gym.make("CarRacing-v3"), "runs/vae/carracing")
    """

    def __init__(
        self,
        env: gym.Env,
        model: Encoder | str | Path,
        frame_stack: int = 1,
        action_history: int = 0,
        sample: bool = False,
        device: str = "auto",
        precision: str = "auto",
        runtime: str = "auto",
    ):
        gym.utils.RecordConstructorArgs.__init__(
            self,
            model=str(model) if isinstance(model, (str, Path)) else model,
            frame_stack=frame_stack,
            action_history=action_history,
            sample=sample,
            device=device,
            precision=precision,
            runtime=runtime,
        )
        self.model = resolve_model(model, device)
        env, self.env_spec = model_frames("LatentObservation", env, model, self.model)
        gym.Wrapper.__init__(self, env)
        check_frame_space("LatentObservation", env.observation_space, self.model)
        self.sample = sample
        self.encoder = frame_encoder(self.model, runtime, precision, sample)
        self.runtime, self.precision = self.encoder.name, self.encoder.precision
        self.history = LatentHistory(
            1, self.model.latent_dim, env.action_space, frame_stack, action_history
        )
        self.observation_space = self.history.space()
        self.last_frame: np.ndarray | None = None

    def _encode(self, frame: np.ndarray) -> np.ndarray:
        self.last_frame = frame
        return self.encoder(frame)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        frame, info = self.env.reset(seed=seed, options=options)
        self.history.reset(0, self._encode(frame))
        return self.history.observation(0), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        frame, reward, terminated, truncated, info = self.env.step(action)
        self.history.push(0, self._encode(frame), action)
        return self.history.observation(0), reward, terminated, truncated, info


class VecLatentObservation(VecEnvWrapper):
    """Encode the frames of all envs of an SB3 VecEnv in one batched call.

    Same arguments and observations as :class:`LatentObservation`; ``infos[i]
    ["terminal_observation"]`` is replaced by its latent observation too (what the agent would
    have seen), as ``VecTransposeImage`` does for transposed frames. ``last_frames`` keeps the
    latest uint8 frames ``(N, H, W, C)`` for videos.

    When ``venv`` is (or only ``VecMonitor`` wraps) a
    :class:`~envs.preprocessing.FrameChunkSource`, the source hands over its preprocessed
    frames and terminal frames together; with ``chunk_size`` below the number of envs they
    come in chunks of at least ``chunk_size`` envs as the envs finish, each encoded while the
    rest still step (same observations up to float rounding). The default is all envs at
    once, measured faster on two cores (see the module docstring). Every frame goes through
    :meth:`encode`, the one place that runs the model, on ``encode_threads`` threads
    (:data:`ENCODE_THREADS`; None: torch's own setting) of the runtime ``runtime`` picks
    (:func:`frame_encoder`; the chosen one is ``self.runtime``). ``thread_budget`` records the
    split of the cores between the encode and the env's threads.

    Example:
        >>> venv = EnvpoolVecEnv("CarRacing-v3", 8, crop=(0, 12, 0, 0), async_step=True)
        >>> env = VecLatentObservation(VecMonitor(venv), "runs/vae/carracing")
        >>> env.reset().shape
        (8, 32)
    """

    def __init__(
        self,
        venv: VecEnv,
        model: Encoder | str | Path,
        frame_stack: int = 1,
        action_history: int = 0,
        sample: bool = False,
        device: str = "auto",
        precision: str = "auto",
        chunk_size: int | None = None,
        encode_threads: int | None = ENCODE_THREADS,
        runtime: str = "auto",
    ):
        self.model = resolve_model(model, device)
        check_frame_space("VecLatentObservation", venv.observation_space, self.model)
        self.chunk_source = chunk_source(venv)
        self.chunk_size = chunk_size or venv.num_envs
        self.encode_threads = encode_threads
        self.thread_budget: dict[str, int | None] = {
            "encode_threads": encode_threads or torch.get_num_threads(),
            "env_threads": getattr(self.chunk_source, "num_threads", None),
            "chunk_size": self.chunk_size
            if getattr(self.chunk_source, "async_step", False)
            else venv.num_envs,
        }
        self.sample = sample
        self.encoder = frame_encoder(self.model, runtime, precision, sample, encode_threads)
        self.runtime, self.precision = self.encoder.name, self.encoder.precision
        self.history = LatentHistory(
            venv.num_envs, self.model.latent_dim, venv.action_space, frame_stack, action_history
        )
        super().__init__(venv, observation_space=self.history.space())
        self._actions: np.ndarray | None = None
        self.last_frames: np.ndarray | None = None

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames ``(N, H, W, C)`` -> float32 latents ``(N, latent_dim)``: every frame this
        wrapper encodes goes through here."""
        if self.runtime != "torch":  # a CPU runtime holds its own threads (encode_threads)
            return self.encoder(np.asarray(frames))
        with torch_threads(self.encode_threads):
            return self.encoder(np.asarray(frames))

    def reset(self) -> VecEnvObs:
        frames = self.venv.reset()
        assert isinstance(frames, np.ndarray)
        self.last_frames = frames
        self.history.reset_many(np.arange(self.num_envs), self.encode(frames))
        return self.history.observations()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self.chunk_source is not None:
            return self._step_wait_chunked(self.chunk_source)
        frames, rewards, dones, infos = self.venv.step_wait()
        assert isinstance(frames, np.ndarray)
        z, done_idx, z_terminal = encode_step(self.encode, frames, dones, infos)
        return self._advance(frames, rewards, dones, infos, z, done_idx, z_terminal)

    def _step_wait_chunked(self, source: FrameChunkSource) -> VecEnvStepReturn:
        """``step_wait`` with each chunk of finished envs encoded while the others step."""
        n, d = self.num_envs, self.model.latent_dim
        z = np.zeros((n, d), np.float32)
        z_end = np.zeros((n, d), np.float32)
        seen = np.zeros(n, bool)

        def consume(chunk: FrameChunk) -> None:
            codes = self.encode(chunk.frames)
            k = len(chunk.env_ids)
            z[chunk.env_ids] = codes[:k]
            z_end[chunk.done_ids] = codes[k:]
            seen[chunk.env_ids] = True

        with source.frame_consumer(consume, self.chunk_size):
            frames, rewards, dones, infos = self.venv.step_wait()
        if not seen.all():
            raise RuntimeError(
                f"{type(source).__name__} delivered frames of {int(seen.sum())} of {n} envs"
            )
        assert isinstance(frames, np.ndarray)
        done_idx = [i for i in range(n) if dones[i] and "terminal_observation" in infos[i]]
        return self._advance(frames, rewards, dones, infos, z, done_idx, z_end[done_idx])

    def _advance(
        self,
        frames: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
        z: np.ndarray,
        done_idx: list[int],
        z_terminal: np.ndarray,
    ) -> VecEnvStepReturn:
        """The step's observations from its latents ``z`` ``(N, D)`` and the terminal ones
        ``z_terminal`` ``(len(done_idx), D)``."""
        assert self._actions is not None
        actions = np.asarray(self._actions)
        self.last_frames = frames
        if done_idx:
            ended = np.asarray(done_idx)
            self.history.push_many(ended, z_terminal, actions[ended])
            for i, obs in zip(done_idx, self.history.observations(ended), strict=True):
                infos[i]["terminal_observation"] = obs
        done = np.asarray(dones, bool)
        running = np.flatnonzero(~done)
        if running.size:
            self.history.push_many(running, z[running], actions[running])
        if done.any():
            restarted = np.flatnonzero(done)
            self.history.reset_many(restarted, z[restarted])
        return self.history.observations(), rewards, dones, infos
