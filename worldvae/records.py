"""What a run record names: folders that survive a change of working folder, and the frames a
dataset given beside a model must hold.

A record (a VAE run's ``config.json``, a latent dataset's manifest, M's ``config.json``, an
agent's ``config.json``, a sweep's ``sweep.json``) names the folders it was made from. Written,
such a path is absolute and resolved (:func:`record_path`), so a command run from another
folder reads the same folder, never one of the same name under its own working folder.

Records written before held the path as given on the command line, relative to a working
folder nobody recorded. :func:`recorded_path` reads such a path relative to the record's own
folder first, then to the working folder, and warns when both hold something different.

A dataset given to a command beside a model is checked against the env spec the model records
(:func:`check_dataset_frames`): a probe or a PCA fitted on other frames would score something
else without a word.

Example:
    >>> record_path("runs/vae").startswith("/")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worldvae.data.manifest import Manifest
from worldvae.envspec import FREE_FIELDS, EnvSpec, field_names, read_env_spec

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def record_path(path: PathLike) -> str:
    """The form a record stores ``path`` in: absolute, ``~``, ``..`` and links resolved."""
    return str(Path(path).expanduser().resolve())


def recorded_path(value: PathLike | None, record_dir: PathLike, what: str = "path") -> Path | None:
    """The folder a record names (None when it names none).

    An absolute path is returned as recorded. A relative one (a record written before paths
    were recorded absolute) is read relative to ``record_dir``, the folder holding the record,
    when something is there, else relative to the working folder; when both exist and differ,
    the record's folder wins and a warning names both. Where neither exists the working
    folder's reading is returned, for the caller's "not found" message.

    Args:
        value: the path as the record holds it.
        record_dir: the folder of the record file.
        what: what the path is, for the warning (e.g. ``"the VAE's dataset"``).
    """
    if value is None or str(value) == "":
        return None
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    beside = (Path(record_dir) / path).resolve()
    here = path.resolve()
    if beside.exists():
        if here.exists() and here != beside:
            logger.warning(
                "%s records %s as %r, relative to a folder it did not record: reading %s "
                "(beside the record), not %s (under the working folder)",
                record_dir,
                what,
                str(value),
                beside,
                here,
            )
        return beside
    return here


def spec_differences(model: EnvSpec, data: EnvSpec) -> list[str]:
    """How the frames of ``data`` differ from those of ``model``, one ``field: a, b`` each
    (the env id and every field that changes a frame; not :data:`FREE_FIELDS`)."""
    problems = []
    if model.env_id != data.env_id:
        problems.append(f"env_id: model {model.env_id}, dataset {data.env_id}")
    for name in field_names():
        if name in FREE_FIELDS:
            continue
        a, b = getattr(model, name), getattr(data, name)
        if a != b:
            problems.append(f"{name}: model {_show(a)}, dataset {_show(b)}")
    return problems


def check_dataset_frames(
    data_spec: EnvSpec, data_dir: PathLike, model_spec: EnvSpec | None, model_dir: PathLike
) -> None:
    """Refuse a dataset whose frames are not those the model was trained on.

    A model that records no env spec (saved without one) is not checked.

    Raises:
        ValueError: naming the dataset, the model and every field where they differ.
    """
    if model_spec is None:
        return
    problems = spec_differences(model_spec, data_spec)
    if problems:
        raise ValueError(
            f"the dataset {data_dir} does not hold the frames the model {model_dir} was "
            f"trained on ({'; '.join(problems)}); pass the dataset the model was trained on"
        )


def check_dataset_for_model(data_dir: PathLike, model_dir: PathLike) -> None:
    """:func:`check_dataset_frames` for the dataset folder ``data_dir`` (its manifest's spec)
    and the model or ``train-vae`` run folder ``model_dir`` (the spec it records).

    Raises:
        ValueError: the frames differ (both named), or ``data_dir``'s manifest is malformed.
        FileNotFoundError: ``data_dir`` is not a dataset.
    """
    data_spec = Manifest.load(Path(data_dir)).env_spec
    check_dataset_frames(data_spec, data_dir, read_env_spec(model_dir), model_dir)


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(dict(value))
    if isinstance(value, tuple):
        return "x".join(map(str, value)) if len(value) == 2 else str(list(value))
    return str(value)
