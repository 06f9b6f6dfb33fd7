"""Minari datasets (Farama's offline-RL format) both ways: export ours, read theirs as ours.

:func:`export_minari` writes one of our dataset folders as a Minari dataset: observations are
the frames, uint8 ``(T + 1, H, W, C)`` per episode, stored losslessly (Minari 0.5.4 would
JPEG-encode image observations by default), with the actions, rewards, terminations and
truncations; the env spec the frames were made with (:meth:`EnvSpec.to_dict`) lies in the
dataset's metadata under ``"worldvae"``, and the env id in Minari's own ``env_spec``.

:class:`MinariEpisodeDataset` is a Minari dataset seen as an :class:`EpisodeDataset`, so that
``train-vae`` and ``data info`` read it as they read ours: episodes are read one at a time
(never the whole dataset), with the same train/validation split rule. Its image observations
are a ``Box`` of uint8 ``(H, W, C)`` (C 1, 3 or 4) or ``(H, W)``, or the ``"pixels"`` entry
(gymnasium's ``AddRenderObservation``) or ``"image"`` entry (MiniGrid) of a ``Dict``.

Frame size: a dataset exported by worldvae keeps the frames and the env spec it was collected
with. Frames of any other Minari dataset are made as ``collect`` makes an env's frames: resized
on the fly (``cv2.INTER_AREA``, alpha dropped) to the V's frame size, 64x64 unless
``frame_size`` says otherwise; the env spec recorded with the model says so, so that an agent
using the model sees frames made the same way.

Minari is an optional dependency (``pip install 'worldvae[minari]'``), imported on first use.
Where datasets live: ``root`` when given, else ``$MINARI_DATASETS_PATH``, else
``~/.minari/datasets`` (Minari's own rule); a dataset ``NAME`` is the folder ``root/NAME``.

Example:
    >>> export_minari("runs/data", "worldvae/cartpole-random-v0")  # doctest: +SKIP
    >>> MinariEpisodeDataset("worldvae/cartpole-random-v0").frame_shape  # doctest: +SKIP
    (64, 64, 3)
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.factory import make_env
from envs.preprocessing import FrameTransform
from worldvae.data.dataset import EpisodeDataset, EpisodeInfo
from worldvae.data.episodes import CorruptEpisodeError, Episode, load_episode
from worldvae.data.manifest import Manifest
from worldvae.envspec import RECORDED_DEFAULT_BACKEND, EnvSpec, as_frame_size

INSTALL_HINT = "pip install 'worldvae[minari]'"
METADATA_KEY = "worldvae"  # our record in a Minari dataset's metadata
IMAGE_KEYS = ("pixels", "image")  # the image entry of a Dict observation space, in this order
DATA_DIR = "data"  # Minari keeps a dataset's files in NAME/data
METADATA_FILE = "metadata.json"
NAME_FORM = "(namespace/)name-vN, e.g. worldvae/cartpole-random-v0"


def import_minari() -> Any:
    """The ``minari`` module; raises ImportError naming the extra to install."""
    try:
        import minari
    except ImportError as e:
        raise ImportError(f"Minari datasets need the minari package: {INSTALL_HINT}") from e
    return minari


def default_minari_root() -> Path:
    """Where Minari keeps local datasets: ``$MINARI_DATASETS_PATH``, else
    ``~/.minari/datasets``."""
    given = os.environ.get("MINARI_DATASETS_PATH")
    return Path(given) if given else Path.home() / ".minari" / "datasets"


def minari_dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """The folder of Minari dataset ``name`` under ``root`` (default :func:`default_minari_root`).

    Raises:
        ValueError: ``name`` is not a Minari dataset id.
    """
    import_minari()
    from minari.dataset.minari_dataset import parse_dataset_id

    try:  # minari raises ValueError, or gymnasium's Error (0.5.0), or TypeError (no -vN)
        parse_dataset_id(name)
    except (ValueError, TypeError, gym.error.Error):
        raise ValueError(f"{name!r} is not a Minari dataset name; they read {NAME_FORM}") from None
    base = Path(root) if root is not None else default_minari_root()
    return base.expanduser().absolute() / name  # Minari's storage fails on a relative path


def image_observation(space: gym.Space) -> tuple[str | None, spaces.Box]:
    """The image in a Minari observation space: ``(None, space)`` for a uint8 ``(H, W, C)``
    or ``(H, W)`` Box, ``(key, box)`` for the :data:`IMAGE_KEYS` entry of a Dict.

    Raises:
        ValueError: no such image, naming what the space holds.
    """
    key = None
    if isinstance(space, spaces.Dict):
        key = next((k for k in IMAGE_KEYS if k in space.spaces), None)
        if key is None:
            raise ValueError(
                f"a Minari dataset's Dict observations need an image entry named one of "
                f"{IMAGE_KEYS}, got keys {sorted(space.spaces)}"
            )
        space = space.spaces[key]
    shape: tuple[int, ...] = tuple(getattr(space, "shape", None) or ())
    image_shape = len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))
    if not isinstance(space, spaces.Box) or space.dtype != np.uint8 or not image_shape:
        where = f"entry {key!r} of its observations" if key else "observations"
        raise ValueError(
            f"a Minari dataset for worldvae needs uint8 (H, W, C) or (H, W) Box images as its "
            f"{where}, got {space}"
        )
    return key, space


# ---- export ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MinariExport:
    """What :func:`export_minari` wrote."""

    path: Path
    name: str
    episodes: int
    steps: int


def _check_target(target: Path, overwrite: bool) -> None:
    """Refuse to write over ``target`` unless ``overwrite``, and never over a folder that is
    not one Minari dataset (a namespace holding others, or something else)."""
    if not target.exists():
        return
    entries = sorted(p.name for p in target.iterdir())
    is_dataset = (target / DATA_DIR / METADATA_FILE).is_file() and entries == [DATA_DIR]
    if not is_dataset:
        shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
        raise FileExistsError(
            f"{target} exists and is not a single Minari dataset (it holds {shown or 'nothing'})"
            "; nothing was written: choose another NAME"
        )
    if not overwrite:
        raise FileExistsError(
            f"the Minari dataset {target} exists; choose another NAME, or pass --overwrite to "
            "replace it (that dataset alone is removed)"
        )


def _gym_env_spec(spec: EnvSpec) -> Any:
    """Gymnasium's spec of the env the frames came from (its registered one, with the env
    kwargs and the time limit of ``spec``), for Minari's ``env_spec``."""
    gym_spec = gym.spec(spec.env_id)
    changes: dict[str, Any] = {"kwargs": {**gym_spec.kwargs, **spec.env_kwargs}}
    if spec.max_episode_steps is not None:
        changes["max_episode_steps"] = spec.max_episode_steps
    return dataclasses.replace(gym_spec, **changes)


def _buffers(source: EpisodeDataset) -> Iterator[Any]:
    """Our episodes as Minari ``EpisodeBuffer``s, one read at a time (ids 0, 1, ...)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    for minari_id, info in enumerate(source.episodes):
        ep = load_episode(info.path)
        yield EpisodeBuffer(
            id=minari_id,
            seed=int(ep.seed),
            observations=ep.frames,
            actions=ep.actions,
            rewards=ep.rewards,
            terminations=ep.terminated,
            truncations=ep.truncated,
        )


def _record(source: EpisodeDataset) -> dict[str, Any]:
    """What the Minari metadata keeps of our dataset, to read it back as it was."""
    m = source.manifest
    return {
        "env_spec": m.env_spec.to_dict(),
        "frame_shape": list(m.frame_shape),
        "policy": m.policy,
        "seed": m.seed,
        "versions": m.versions,
        # our episode indices, so that the validation split stays the same
        "episode_indices": [e.index for e in source.episodes],
    }


def _write_storage(source: EpisodeDataset, name: str, data_path: Path) -> Any:
    """Write the Minari storage of ``source`` into ``data_path`` (a new folder); return it."""
    minari = import_minari()
    from minari.dataset.minari_storage import MinariStorage

    spec = source.manifest.env_spec
    # the action space the actions were taken in; every backend takes gymnasium's actions
    probe = make_env(spec.replace(backend=RECORDED_DEFAULT_BACKEND))
    action_space = probe.action_space
    probe.close()
    lossless = (
        {"jpeg_encoding": False}
        if "jpeg_encoding" in inspect.signature(MinariStorage.new).parameters
        else {}
    )
    storage = MinariStorage.new(
        data_path,
        observation_space=spaces.Box(0, 255, source.frame_shape, np.uint8),
        action_space=action_space,
        env_spec=_gym_env_spec(spec),
        data_format="hdf5",
        **lossless,
    )
    storage.update_metadata(
        {
            "dataset_id": name,
            "minari_version": minari.__version__,
            "algorithm_name": str(source.manifest.policy.get("name", "unknown")),
            "description": f"frames of {spec.env_id} collected with worldvae",
            METADATA_KEY: _record(source),
        }
    )
    storage.update_episodes(_buffers(source))
    return storage


def export_minari(
    dataset: str | Path,
    name: str,
    root: str | Path | None = None,
    overwrite: bool = False,
) -> MinariExport:
    """Write the dataset folder ``dataset`` as the Minari dataset ``name`` under ``root``.

    The dataset is written beside its place under a hidden name and moved there when
    complete, so that a failed export leaves neither a partial dataset nor, with
    ``overwrite``, a removed one.

    Args:
        dataset: one of our dataset folders (``worldvae collect --out``).
        name: the Minari dataset id, ``(namespace/)name-vN``.
        root: Minari's datasets folder (default :func:`default_minari_root`).
        overwrite: replace an existing Minari dataset ``name`` (that one alone).

    Raises:
        FileExistsError: ``name`` exists and ``overwrite`` is False, or its folder is not a
            Minari dataset.
        ImportError: minari is not installed (naming the extra).
    """
    target = minari_dataset_dir(name, root)
    source = EpisodeDataset(dataset, val_fraction=0.0)
    _check_target(target, overwrite)
    partial = target.parent / f".{target.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # a killed export's leftovers
    partial.mkdir(parents=True)
    try:
        storage = _write_storage(source, name, partial / DATA_DIR)
        done = MinariExport(target, name, storage.total_episodes, storage.total_steps)
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return done


# ---- reading -------------------------------------------------------------------------------


def _frame_spec(
    name: str, metadata: dict[str, Any], env_id: str | None, image: spaces.Box, frame_size: Any
) -> tuple[EnvSpec, dict[str, Any] | None]:
    """The env spec of the frames a Minari dataset gives worldvae, and our record in its
    metadata (None for a dataset that worldvae did not write). ``env_id``: that of Minari's
    ``env_spec``, where the dataset has one."""
    record = metadata.get(METADATA_KEY)
    if isinstance(record, dict) and "env_spec" in record:
        spec = EnvSpec.from_dict(record["env_spec"])
        if frame_size is not None and as_frame_size(frame_size) != spec.frame_size:
            h, w = spec.frame_size
            raise ValueError(
                f"minari:{name} holds frames worldvae collected at {h}x{w} from "
                f"{spec.env_id}; they are not made again at another size: drop "
                "--minari-frame-size, or collect the env at that --frame-size"
            )
        if spec.frame_shape != tuple(image.shape):
            raise ValueError(
                f"minari:{name} records frames of {spec.frame_shape} but its observations "
                f"are {tuple(image.shape)}: the dataset was changed after it was exported"
            )
        return spec, record
    channels = 1 if len(image.shape) == 2 else int(image.shape[2])
    spec = EnvSpec(
        env_id or f"minari:{name}", grayscale=channels == 1, backend=RECORDED_DEFAULT_BACKEND
    )
    return spec.replace(frame_size=frame_size), None


class MinariEpisodeDataset(EpisodeDataset):
    """A Minari dataset read as an :class:`EpisodeDataset` (see the module docstring).

    Episodes are read one at a time, when a stream or a sample asks for them. Their lengths
    come from Minari's episode metadata; their returns are read by :meth:`stats` alone (a
    Minari episode's rewards come with its frames), and are NaN until then.

    Args:
        name: the Minari dataset id.
        root: Minari's datasets folder (default :func:`default_minari_root`).
        val_fraction: share of episodes held out for validation, as for ours; a dataset that
            worldvae exported keeps its episode indices, so its split is the original's.
        frame_size: the frame ``(height, width)`` (or side) of a dataset worldvae did not write
            (default 64x64); a worldvae dataset keeps its own.
        skip_corrupt: log and skip episodes that cannot be read.

    Raises:
        FileNotFoundError: no Minari dataset ``name`` under ``root``.
        ValueError: no image observations, or a ``frame_size`` a worldvae dataset refuses.
        ImportError: minari (or the library of its storage format) is not installed.
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None = None,
        val_fraction: float = 0.1,
        frame_size: int | tuple[int, int] | None = None,
        skip_corrupt: bool = False,
    ):
        minari = import_minari()
        folder = minari_dataset_dir(name, root)
        if not (folder / DATA_DIR / METADATA_FILE).is_file():
            raise FileNotFoundError(
                f"no Minari dataset {name!r} in {folder.parent}; give --minari-root (or set "
                "MINARI_DATASETS_PATH) to its datasets folder, or list them with "
                "`minari list local`"
            )
        self.name = name
        self.minari = minari.MinariDataset(folder / DATA_DIR)
        metadata = self.minari.storage.metadata
        self.image_key, image = image_observation(self.minari.observation_space)
        env_id = self.minari.env_spec.id if self.minari.env_spec is not None else None
        spec, record = _frame_spec(name, metadata, env_id, image, frame_size)
        self.transform = FrameTransform(image.shape, spec.frame_size, grayscale=spec.grayscale)
        manifest = Manifest(
            **spec.to_dict(),
            frame_shape=spec.frame_shape,
            policy=(record or {}).get("policy")
            or {"name": str(metadata.get("algorithm_name", "minari")), "params": {}},
            seed=int((record or {}).get("seed", 0)),
            versions=(record or {}).get("versions")
            or {"minari": str(metadata.get("minari_version", ""))},
        )
        infos = self._episode_infos(folder, (record or {}).get("episode_indices"))
        if not infos:
            raise ValueError(f"the Minari dataset {name} in {folder} holds no episode")
        self._hold(folder, manifest, infos, val_fraction, skip_corrupt)
        self._returns_read = False

    def __str__(self) -> str:
        return f"minari:{self.name}"

    def _episode_infos(self, folder: Path, indices: list[int] | None) -> list[EpisodeInfo]:
        """One :class:`EpisodeInfo` per Minari episode, indexed by our recorded indices where
        the dataset keeps them, else by Minari's episode ids."""
        ids = [int(i) for i in self.minari.episode_indices]
        if indices is None or len(indices) != len(ids):
            indices = ids
        self._minari_ids = dict(zip((int(i) for i in indices), ids, strict=True))
        metadata = self.minari.storage.get_episode_metadata(ids)
        return [
            EpisodeInfo(folder, index, int(m["total_steps"]), float("nan"))
            for index, m in zip(self._minari_ids, metadata, strict=True)
        ]

    def _read(self, info: EpisodeInfo) -> Any:
        """Minari's ``EpisodeData`` of one episode."""
        minari_id = self._minari_ids[info.index]
        try:
            return next(iter(self.minari.iterate_episodes([minari_id])))
        except (OSError, KeyError, ValueError) as e:
            raise CorruptEpisodeError(
                f"episode {minari_id} of {self} ({self.root}) cannot be read: {e}"
            ) from e

    def _frames_of(self, observations: Any) -> np.ndarray:
        """The frames ``(T + 1, H, W, C)`` of the spec from one episode's observations."""
        frames = np.asarray(observations[self.image_key] if self.image_key else observations)
        if tuple(frames.shape[1:]) == self.frame_shape:
            return frames
        return self.transform.batch(frames)

    def read_frames(self, info: EpisodeInfo) -> np.ndarray:
        """The frames of one episode, uint8 ``(T + 1, H, W, C)``."""
        return self._frames_of(self._read(info).observations)

    def read_episode(self, info: EpisodeInfo) -> Episode:
        """One whole episode as ours: frames, actions, rewards, terminations, truncations and
        its reset seed (-1 where Minari has none).

        Raises:
            ValueError: actions of a Dict or Tuple space, which an episode cannot hold.
        """
        data = self._read(info)
        if not isinstance(data.actions, np.ndarray):
            raise ValueError(
                f"{self} has actions of {self.minari.action_space}; worldvae episodes hold "
                "actions of Box, Discrete or MultiDiscrete spaces"
            )
        minari_id = self._minari_ids[info.index]
        (meta,) = self.minari.storage.get_episode_metadata([minari_id])
        return Episode(
            frames=self._frames_of(data.observations),
            actions=data.actions,
            rewards=np.asarray(data.rewards, np.float32),
            terminated=np.asarray(data.terminations, bool),
            truncated=np.asarray(data.truncations, bool),
            seed=int(meta["seed"]) if meta.get("seed") is not None else -1,
        )

    def stats(self) -> dict[str, float]:
        """As :meth:`EpisodeDataset.stats`; reads every episode's rewards the first time."""
        if not self._returns_read:
            self.episodes = tuple(
                dataclasses.replace(
                    e, episode_return=float(np.sum(self._read(e).rewards, dtype=np.float64))
                )
                for e in self.episodes
            )
            self._returns_read = True
        return super().stats()
