"""Latent datasets: an episode dataset's frames encoded once by a VAE, for training M.

A latent dataset directory mirrors the episode dataset it was made from::

    latent_manifest.json       source dataset, its manifest, the model's sha256 and config,
                               the action encoding, library versions
    episodes/ep_0000000.npz    one episode per file, written atomically

Each ``.npz`` (read with ``allow_pickle=False``, CRC-checked like episode files) holds, for an
episode of ``T`` steps: ``mu`` and ``logvar`` float32 ``(T+1, D)`` (posterior of every frame;
``logvar`` is zeros for deterministic autoencoders), ``actions`` float32 ``(T, A)`` (one-hot
for discrete actions), ``rewards`` float32 ``(T,)``, ``terminated`` and ``truncated`` bool
``(T,)`` and ``seed``.

:class:`SequenceStream` reads them back as fixed-length chunks with bounded memory.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from worldvae.atomic import atomic_path, remove_stale_temporaries
from worldvae.data.dataset import (
    EpisodeDataset,
    Split,
    read_episode_rewards,
    split_episodes,
    validation_indices,
)
from worldvae.data.episodes import (
    CorruptEpisodeError,
    InvalidEpisodeError,
    MemberSpec,
    check_layout,
    read_episode,
)
from worldvae.data.manifest import EPISODES_DIR, JsonManifest, episode_index, list_episode_files
from worldvae.envspec import EnvSpec, read_env_spec
from worldvae.records import check_dataset_frames, record_path, recorded_path
from worldvae.rundir import RunDirLock, check_ours, entries, remove_owned
from worldvae.versions import library_versions

LATENT_MANIFEST = "latent_manifest.json"
# What a latent dataset folder holds; ``--overwrite`` removes these and nothing else.
LATENT_ENTRIES = (LATENT_MANIFEST, EPISODES_DIR)
LATENT_KEYS = ("mu", "logvar", "actions", "rewards", "terminated", "truncated", "seed")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActionSpec:
    """How actions are fed to M: ``discrete`` (one-hot of ``n`` values, first ``start``) or
    ``box`` (the raw vector of ``n`` values, clipped to ``low``/``high``)."""

    kind: str
    n: int
    start: int = 0
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("discrete", "box"):
            raise ValueError(f"ActionSpec kind must be 'discrete' or 'box', got {self.kind!r}")
        if self.n < 1:
            raise ValueError(f"ActionSpec needs n >= 1, got {self.n}")
        if self.kind == "box" and (len(self.low) != self.n or len(self.high) != self.n):
            raise ValueError(f"a box ActionSpec needs {self.n} low and high bounds")

    @property
    def dim(self) -> int:
        """Width ``A`` of an encoded action."""
        return self.n

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Raw actions ``(T,)`` or ``(T, n)`` -> float32 ``(T, A)``."""
        actions = np.asarray(actions)
        if self.kind == "discrete":
            idx = actions.reshape(len(actions)).astype(np.int64) - self.start
            if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
                raise ValueError(
                    f"discrete actions must lie in [{self.start}, {self.start + self.n}), "
                    f"got values {int(idx.min()) + self.start}..{int(idx.max()) + self.start}"
                )
            out = np.zeros((len(idx), self.n), np.float32)
            out[np.arange(len(idx)), idx] = 1.0
            return out
        flat = actions.reshape(len(actions), -1).astype(np.float32)
        if flat.shape[1] != self.n:
            raise ValueError(f"box actions must have {self.n} values, got {flat.shape[1]}")
        return np.clip(flat, np.asarray(self.low, np.float32), np.asarray(self.high, np.float32))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["low"], d["high"] = list(self.low), list(self.high)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionSpec:
        d = dict(d)
        d["low"], d["high"] = tuple(d.get("low", ())), tuple(d.get("high", ()))
        return cls(**d)


@dataclass(frozen=True)
class LatentManifest(JsonManifest):
    """Describes a latent dataset; stored as ``latent_manifest.json`` at its root.

    Attributes:
        source: the episode dataset's directory (absolute; see :mod:`worldvae.records`).
        source_manifest: that dataset's manifest fields (env id, make_env options, ...).
        model_sha256: hash of the encoder's ``config.json`` and weights.
        model_dir: where the encoder was read from (absolute).
        model_config: the encoder's configuration.
        latent_dim: ``D``.
        action: the :class:`ActionSpec` as a dict.
    """

    source: str
    source_manifest: dict[str, Any]
    model_sha256: str
    model_dir: str
    model_config: dict[str, Any]
    latent_dim: int
    action: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)

    FILE: ClassVar[str] = LATENT_MANIFEST
    WHAT: ClassVar[str] = "latent dataset"
    HOW: ClassVar[str] = "make one with `worldvae encode-data --data DATASET --model VAE --out DIR`"
    LABEL: ClassVar[str] = "latent manifest"

    @property
    def action_spec(self) -> ActionSpec:
        return ActionSpec.from_dict(self.action)

    @property
    def env_id(self) -> str:
        return str(self.source_manifest["env_id"])

    @property
    def env_spec(self) -> EnvSpec:
        """The env spec of the frames the latents were encoded from."""
        return EnvSpec.from_dict(self.source_manifest)

    def layout(self) -> tuple[MemberSpec, ...]:
        """The members of this dataset's episode files (see the module docstring)."""
        latent = (self.latent_dim,)
        return (
            MemberSpec("mu", "f", 1, latent, source="the latent manifest's latent_dim"),
            MemberSpec("logvar", "f", 1, latent, source="the latent manifest's latent_dim"),
            MemberSpec("actions", "f", 0, (self.action_spec.dim,), source="its action spec"),
            MemberSpec("rewards", "f"),
            MemberSpec("terminated", "b"),
            MemberSpec("truncated", "b"),
            MemberSpec("seed", "iu", None),
        )

    def making(self) -> dict[str, Any]:
        """What the latents were made from and how, without where those files lay: the
        dataset's identity, the model's hash and config, the action encoding. A latent dataset
        moved with its sources (a pipeline folder copied to another machine) is the same
        making."""
        identity = self.identity()
        for where in ("source", "model_dir"):
            identity.pop(where)
        return identity

    def model_path(self, root: str | Path) -> Path:
        """The encoder's folder; ``root`` is this manifest's dataset folder, against which a
        relative path of an older manifest is read first (:func:`worldvae.records.recorded_path`)."""
        return recorded_path(self.model_dir, root, "the encoder") or Path(self.model_dir)

    def with_paths_read(self, root: str | Path) -> LatentManifest:
        """This manifest with ``source`` and ``model_dir`` as they are written now (absolute),
        read from ``root``, its dataset folder."""
        source = recorded_path(self.source, root, "the episode dataset") or Path(self.source)
        return dataclasses.replace(
            self, source=record_path(source), model_dir=record_path(self.model_path(root))
        )


def check_latent_episode(path: str | Path, manifest: LatentManifest) -> None:
    """Check a latent episode file against its dataset's ``manifest`` from its headers.

    Raises:
        CorruptEpisodeError: the file is unreadable.
        InvalidEpisodeError: naming the file, what is wrong, and the fix.
    """
    root = Path(path).parent.parent
    fix = (
        f"encode the dataset afresh: `worldvae encode-data --data {manifest.source} --model "
        f"{manifest.model_dir} --out {root} --overwrite`"
    )
    check_layout(path, manifest.layout(), fix)


@dataclass(frozen=True)
class EncodeResult:
    out_dir: Path
    new_episodes: int
    total_episodes: int
    frames: int


def encode_dataset(
    data: str | Path,
    model: Any,
    model_dir: str | Path,
    model_sha256: str,
    out: str | Path,
    action_spec: ActionSpec,
    batch_size: int = 256,
    overwrite: bool = False,
    progress: bool = True,
    skip_corrupt: bool = False,
) -> EncodeResult:
    """Encode every episode of the dataset ``data`` with ``model`` into ``out``.

    Each episode is written atomically; a re-run skips episodes already encoded (resume), and a
    directory made from another dataset or model is refused unless ``overwrite``.

    Args:
        model: an :class:`~worldvae.vae.Autoencoder` (its ``posterior`` gives mean and
            log-variance ``(B, D)``).
        model_dir, model_sha256: where the model came from and its hash (recorded).
        action_spec: how actions are encoded for M.

    Raises:
        FileExistsError: ``out`` holds a latent dataset made otherwise and ``overwrite`` is off,
            or files a latent dataset does not hold (``ForeignDirError``, even with
            ``overwrite``).
        RunDirBusyError: another process is writing ``out``.
        ValueError: the model's frame shape or recorded env spec differs from the dataset's.
    """
    ds = EpisodeDataset(data, val_fraction=0.0, skip_corrupt=skip_corrupt)
    check_dataset_frames(ds.manifest.env_spec, data, read_env_spec(model_dir), model_dir)
    if tuple(model.config.frame_shape) != tuple(ds.frame_shape):
        raise ValueError(
            f"the model expects frames {tuple(model.config.frame_shape)}, the dataset {data} holds "
            f"{tuple(ds.frame_shape)}; encode it with a model trained on this dataset"
        )
    out = Path(out)
    manifest = LatentManifest(
        source=record_path(data),
        source_manifest=ds.manifest.identity(),
        model_sha256=model_sha256,
        model_dir=record_path(model_dir),
        model_config=model.config.to_dict(),
        latent_dim=int(model.config.latent_dim),
        action=action_spec.to_dict(),
        versions=library_versions(),
    )
    with RunDirLock(out, "encode-data"):
        _claim_latent_dir(out, manifest, overwrite)
        return _encode_episodes(ds, model, out, manifest, action_spec, batch_size, progress)


def _claim_latent_dir(out: Path, manifest: LatentManifest, overwrite: bool) -> None:
    """Refuse ``out`` unless it is empty or a latent dataset of the same making (resume);
    ``overwrite`` removes a latent dataset's own entries and nothing else."""
    if entries(out):
        check_ours(out, LATENT_ENTRIES, "latent dataset")
    if (out / LATENT_MANIFEST).is_file():
        old = LatentManifest.load(out).with_paths_read(out)
        if overwrite:
            remove_owned(out, LATENT_ENTRIES)
        elif old.making() != manifest.making():
            raise FileExistsError(
                f"{out} holds a latent dataset made from another dataset or model "
                f"(model {old.model_sha256[:12]} from {old.source}); pass --overwrite to replace "
                "it or choose another --out"
            )
    elif entries(out):
        if not overwrite:
            raise FileExistsError(
                f"{out} holds episodes but no {LATENT_MANIFEST}; choose another --out or pass "
                "--overwrite to encode it afresh"
            )
        remove_owned(out, LATENT_ENTRIES)


def _encode_episodes(
    ds: EpisodeDataset,
    model: Any,
    out: Path,
    manifest: LatentManifest,
    action_spec: ActionSpec,
    batch_size: int,
    progress: bool,
) -> EncodeResult:
    """Write every episode of ``ds`` not yet in ``out`` (one atomic file each)."""
    (out / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out / EPISODES_DIR)
    manifest.save(out)
    todo = [e for e in ds.episodes if not (out / EPISODES_DIR / e.path.name).is_file()]
    bar = tqdm(total=len(todo), desc="encode", unit="ep", disable=not progress, dynamic_ncols=True)
    frames = 0
    for info in todo:
        ep = read_episode(info.path)
        actions = _encoded_actions(action_spec, ep["actions"], info.path)
        mu, logvar = encode_frames(model, ep["frames"], batch_size)
        with atomic_path(out / EPISODES_DIR / info.path.name) as tmp:
            np.savez_compressed(
                tmp,
                mu=mu,
                logvar=logvar,
                actions=actions,
                rewards=ep["rewards"].astype(np.float32),
                terminated=ep["terminated"].astype(bool),
                truncated=ep["truncated"].astype(bool),
                seed=np.int64(ep["seed"]),
            )
        frames += len(mu)
        bar.update(1)
    bar.close()
    total = len(list_episode_files(out))
    return EncodeResult(out, len(todo), total, frames)


def _encoded_actions(action_spec: ActionSpec, actions: np.ndarray, path: Path) -> np.ndarray:
    """An episode's actions as M takes them.

    Raises:
        InvalidEpisodeError: they do not fit the env's action space (the file named).
    """
    try:
        return action_spec.encode(actions)
    except ValueError as e:
        raise InvalidEpisodeError(
            f"episode file {path} cannot be used: its actions do not fit the env's action space "
            f"({e}); remove it from the dataset (`worldvae data verify {path.parent.parent}` "
            "lists every unusable file) and re-run the collect command to re-collect it"
        ) from e


def encode_frames(model: Any, frames: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, ...]:
    """uint8 frames ``(N, H, W, C)`` -> posterior ``mu``, ``logvar`` float32 ``(N, D)`` each."""
    mus, logvars = [], []
    with torch.inference_mode():
        for i in range(0, len(frames), batch_size):
            x = model.to_input(torch.from_numpy(np.ascontiguousarray(frames[i : i + batch_size])))
            mu, logvar = model.posterior(x)
            mus.append(mu.float().cpu().numpy())
            logvars.append(
                torch.zeros_like(mu).cpu().numpy()
                if logvar is None
                else logvar.float().cpu().numpy()
            )
    return np.concatenate(mus).astype(np.float32), np.concatenate(logvars).astype(np.float32)


@dataclass(frozen=True)
class LatentEpisodeInfo:
    path: Path
    index: int
    length: int


class LatentDataset:
    """Read-only view of a latent dataset, with the episode dataset's train/validation split.

    Raises:
        FileNotFoundError: no latent manifest.
        ValueError: no episode.
    """

    def __init__(self, root: str | Path, val_fraction: float = 0.1, skip_corrupt: bool = False):
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root = Path(root)
        self.manifest = LatentManifest.load(self.root)
        self.val_fraction = val_fraction
        self.skip_corrupt = skip_corrupt
        m = self.manifest
        readable, _ = read_episode_rewards(
            self.root, skip_corrupt, lambda p: check_latent_episode(p, m)
        )
        infos = [LatentEpisodeInfo(path, episode_index(path), len(r)) for path, r in readable]
        if not infos:
            raise ValueError(
                f"latent dataset {self.root} holds no episode; run `worldvae encode-data` into it"
            )
        self.episodes: tuple[LatentEpisodeInfo, ...] = tuple(infos)
        self._val = validation_indices([e.index for e in infos], val_fraction)

    @property
    def latent_dim(self) -> int:
        return self.manifest.latent_dim

    @property
    def action_dim(self) -> int:
        return self.manifest.action_spec.dim

    def split(self, which: Split) -> tuple[LatentEpisodeInfo, ...]:
        """Episodes of ``"train"``, ``"val"`` or ``"all"``."""
        return split_episodes(self.episodes, self._val, which)

    def load(self, info: LatentEpisodeInfo) -> dict[str, np.ndarray]:
        return read_episode(info.path, keys=LATENT_KEYS)

    def start_latents(self, which: Split = "all") -> tuple[np.ndarray, np.ndarray]:
        """First-frame posteriors of every episode: ``mu``, ``logvar`` ``(N, D)`` each."""
        mus, logvars = [], []
        for info in self.split(which) or self.episodes:
            d = read_episode(info.path, keys=("mu", "logvar"))
            mus.append(d["mu"][0])
            logvars.append(d["logvar"][0])
        return np.stack(mus), np.stack(logvars)


def episode_chunks(ep: dict[str, np.ndarray], seq_len: int) -> list[dict[str, np.ndarray]]:
    """Cut an episode into chunks of ``seq_len`` steps (the last one zero-padded, ``mask`` 0).

    Each chunk holds ``mu``/``logvar`` ``(L+1, D)`` (inputs and next-step targets),
    ``actions`` ``(L, A)``, ``rewards`` ``(L,)``, ``dones`` ``(L,)`` (terminated) and ``mask``
    ``(L,)``.
    """
    t = len(ep["rewards"])
    out = []
    for start in range(0, t, seq_len):
        n = min(seq_len, t - start)
        pad = seq_len - n

        def cut(x: np.ndarray, extra: int, n: int = n, start: int = start, pad: int = pad) -> Any:
            part = x[start : start + n + extra].astype(np.float32)
            return np.concatenate([part, np.zeros((pad, *x.shape[1:]), np.float32)])

        out.append(
            {
                "mu": cut(ep["mu"], 1),
                "logvar": cut(ep["logvar"], 1),
                "actions": cut(ep["actions"], 0),
                "rewards": cut(ep["rewards"], 0),
                "dones": cut(ep["terminated"], 0),
                "mask": np.r_[np.ones(n, np.float32), np.zeros(pad, np.float32)],
            }
        )
    return out


class SequenceStream:
    """Batches of sequence chunks over some latent episodes, with bounded memory.

    Episodes are read one at a time (order shuffled per ``(seed, epoch)``) and cut into chunks
    of ``seq_len`` steps held in a buffer of at most ``buffer_chunks`` chunks, from which
    shuffled batches are drawn. Each batch is a dict of float32 arrays: ``mu``, ``logvar``
    ``(B, L+1, D)``, ``actions`` ``(B, L, A)``, ``rewards``, ``dones``, ``mask`` ``(B, L)``.
    """

    def __init__(
        self,
        dataset: LatentDataset,
        episodes: Sequence[LatentEpisodeInfo],
        seq_len: int = 32,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        buffer_chunks: int = 4096,
        drop_last: bool = False,
    ):
        if seq_len < 1 or batch_size < 1 or buffer_chunks < 1:
            raise ValueError("seq_len, batch_size and buffer_chunks must be positive")
        self.dataset = dataset
        self.episodes = list(episodes)
        self.seq_len, self.batch_size = seq_len, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.buffer_chunks = max(buffer_chunks, batch_size)
        self.epoch = 0
        self.peak_buffered_chunks = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def n_chunks(self) -> int:
        return sum(-(-e.length // self.seq_len) for e in self.episodes)

    def __len__(self) -> int:
        n = self.n_chunks()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @staticmethod
    def _stack(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.stack([c[k] for c in chunks]) for k in chunks[0]}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        episodes = self.episodes
        if self.shuffle:
            episodes = [episodes[i] for i in rng.permutation(len(episodes))]
        pool: list[dict[str, np.ndarray]] = []
        b = self.batch_size
        for info in episodes:
            try:
                pool.extend(episode_chunks(self.dataset.load(info), self.seq_len))
            except CorruptEpisodeError as e:
                if not self.dataset.skip_corrupt:
                    raise
                logger.warning("skipping %s", e)
                continue
            self.peak_buffered_chunks = max(self.peak_buffered_chunks, len(pool))
            if len(pool) < self.buffer_chunks:
                continue
            if self.shuffle:
                pool = [pool[i] for i in rng.permutation(len(pool))]
            n_emit = (len(pool) - self.buffer_chunks // 2) // b * b
            for start in range(0, n_emit, b):
                yield self._stack(pool[start : start + b])
            pool = pool[n_emit:]
        if self.shuffle:
            pool = [pool[i] for i in rng.permutation(len(pool))]
        for start in range(0, len(pool), b):
            batch = pool[start : start + b]
            if len(batch) < b and self.drop_last:
                break
            yield self._stack(batch)


def read_latent_episode(path: str | Path) -> dict[str, np.ndarray]:
    """All members of one latent episode file (CRC-checked)."""
    return read_episode(path, keys=LATENT_KEYS)


__all__ = [
    "LATENT_MANIFEST",
    "ActionSpec",
    "EncodeResult",
    "LatentDataset",
    "LatentEpisodeInfo",
    "LatentManifest",
    "SequenceStream",
    "encode_dataset",
    "encode_frames",
    "episode_chunks",
    "read_latent_episode",
]
