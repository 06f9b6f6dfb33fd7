"""Agent configuration: per-env YAML hyperparameters (literals only) resolved into one dataclass."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from agents.algo_kwargs import ACTIVATIONS, EXTRA_ALGO_KEYS, SCHEDULED_KEYS, parse_schedule
from agents.algorithms import ALGORITHMS, sb3_algorithm
from agents.arms import ARMS
from envs.factory import new_spec, resolve_spec
from worldvae.config_fields import check_ranges, option, reject_unknown_keys
from worldvae.envspec import EnvSpec, read_env_spec
from worldvae.memory import read_memory_config
from worldvae.records import record_path
from worldvae.vae.inference import RUNTIMES

OBS_KINDS = tuple(ARMS)
ALGOS = tuple(ALGORITHMS)
OBS_KEYS = {name: set(arm.obs_keys) for name, arm in ARMS.items()}
POLICY_KWARGS = {
    "net_arch",
    "activation_fn",
    "ortho_init",
    "normalize_images",
    "share_features_extractor",
    "features_dim",
    "log_std_init",  # continuous actions: the initial log standard deviation
    "lstm_hidden_size",  # recurrentppo's LSTM policies
    "n_lstm_layers",
    "shared_lstm",
    "enable_critic_lstm",
}


def algo_class(algo: str) -> Any:
    """The SB3 class that trains ``algo`` (``cmaes`` is trained by :mod:`agents.controller.cmaes`)."""
    if algo == "cmaes":
        raise ValueError("cmaes is not an SB3 algorithm; agents.controller.cmaes trains it")
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {ALGOS}")
    return sb3_algorithm(algo)


def _algo_keys(algo: str) -> set[str]:
    if algo == "cmaes":
        from agents.controller.cmaes import CMAESConfig

        return {f.name for f in dataclasses.fields(CMAESConfig)}
    params = set(inspect.signature(algo_class(algo).__init__).parameters)
    return (
        params
        - {
            "self",
            "policy",
            "env",
            "seed",
            "device",
            "verbose",
            "tensorboard_log",
            "_init_setup_model",
        }
    ) | set(EXTRA_ALGO_KEYS)


def _algo_defaults(algo: str) -> dict[str, Any]:
    """The constructor's numeric defaults (and ``n_envs``): what a YAML value must match."""
    params = inspect.signature(algo_class(algo).__init__).parameters
    out: dict[str, Any] = {
        "n_envs": 1,
        "normalize_reward": False,
        "shortlist": 0,
        "shortlist_episodes": 20,
    }
    for name, p in params.items():
        if isinstance(p.default, (int, float)):
            out[name] = p.default
    return out


def _check_types(values: dict[str, Any], defaults: dict[str, Any], where: str) -> None:
    """A number where the default is a number, a boolean where it is a boolean."""
    for key, value in values.items():
        if key not in defaults or value is None:
            continue
        want = defaults[key]
        counts = ("n_envs", "n_steps", "batch_size", "buffer_size", "shortlist_episodes")
        if isinstance(want, bool):
            ok = isinstance(value, bool)
        elif key == "shortlist":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        elif isinstance(value, (list, dict)):  # e.g. train_freq: [1, episode]
            ok = True
        elif key in counts:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise ValueError(
                f"{where}.{key} must be {type(want).__name__}"
                f"{' >= 1' if key in counts else ' >= 0' if key == 'shortlist' else ''}"
                f", got {value!r}"
            )


def _read_yaml(path: Path | Any) -> dict[str, Any]:
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}  # safe_load: literals only, no tags that build objects
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise ValueError(
            f"{path}: not a plain YAML file of literals ({detail}); tags such as !!python are "
            "refused"
        ) from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: hyperparameters must be a mapping, got {type(data).__name__}")
    return data


def validate_hyperparams(data: dict[str, Any], source: str) -> None:
    """Raise on unknown sections or keys, naming the file and the known keys."""
    for section, values in data.items():
        if section == "env":
            raise ValueError(
                f"{source}: an 'env' section is not a hyperparameter: frame size, crop, frame "
                "skip and the other make_env options are recorded when frames are collected "
                "and travel with the model (see docs/envspec.md); remove the section, and give "
                "them to `worldvae collect` (or, for a pixel agent without a model, to "
                "`worldvae train-agent`)"
            )
        if section in OBS_KEYS:
            known = OBS_KEYS[section]
        elif section in ALGOS:
            known = _algo_keys(section)
        else:
            raise ValueError(
                f"{source}: unknown section {section!r}; known: env, {', '.join(OBS_KINDS)}, {', '.join(ALGOS)}"
            )
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section {section!r} must be a mapping")
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown keys {unknown} in section {section!r}; known: {sorted(known)}"
            )
        if (
            section in ALGOS and section != "cmaes"
        ):  # cmaes keys: checked by agents.controller.cmaes
            _check_types(values, _algo_defaults(section), f"{source}: {section}")
            for key in SCHEDULED_KEYS:
                parse_schedule(values.get(key), f"{source}: {section}.{key}")
        pk = values.get("policy_kwargs", {})
        if section in ALGOS and set(pk) - POLICY_KWARGS:
            raise ValueError(
                f"{source}: unknown policy_kwargs {sorted(set(pk) - POLICY_KWARGS)}; known: {sorted(POLICY_KWARGS)}"
            )
        if section in ALGOS and pk.get("activation_fn", "relu") not in ACTIVATIONS:
            raise ValueError(
                f"{source}: {section}.policy_kwargs.activation_fn must be one of "
                f"{sorted(ACTIVATIONS)}, got {pk['activation_fn']!r}"
            )


def load_hyperparams(env_id: str, extra_file: str | Path | None = None) -> dict[str, Any]:
    """Defaults, then the env's built-in file, then ``extra_file``; section by section."""
    files: list[tuple[str, Any]] = []
    pkg = resources.files("agents") / "hyperparams"
    files.append(("default.yaml", pkg / "default.yaml"))
    env_file = pkg / f"{env_id.replace('/', '_')}.yaml"
    if env_file.is_file():
        files.append((env_file.name, env_file))
    if extra_file is not None:
        if not Path(extra_file).is_file():
            raise FileNotFoundError(f"hyperparameter file {extra_file} does not exist")
        files.append((str(extra_file), Path(extra_file)))
    merged: dict[str, dict[str, Any]] = {}
    for name, path in files:
        data = _read_yaml(path)
        validate_hyperparams(data, name)
        for section, values in data.items():
            merged.setdefault(section, {}).update(values)
    return merged


@dataclass(frozen=True)
class AgentConfig:
    """Everything that defines one agent run; stored as ``config.json`` in its bundle.

    ``env`` is the env spec the agent plays (its backend resolved); on disk it is the
    ``env_id`` and ``env_options`` keys (:meth:`to_dict`), as every stored agent has them.
    """

    env: EnvSpec
    obs: str = option("pixel", "what the agent sees (see agents.arms)", choices=OBS_KINDS)
    algo: str = option("ppo", "training algorithm", choices=ALGOS)
    model_dir: str | None = option(
        None, "model or VAE run directory (latent, encoder)", flag="--model"
    )
    memory_dir: str | None = option(  # M, for obs "latent+h"
        None, "M's run directory (latent+h: [z, h] inputs)", flag="--memory"
    )
    dream: bool = option(  # DreamEnv
        False, "train inside M's dream, evaluate in the real env (needs --obs latent+h)"
    )
    dream_temperature: float | None = option(
        None, "dream tau (default: M's)", 0.0, 100.0, low_open=True, flag="--temperature"
    )
    dream_ensemble: tuple[str, ...] = option(  # envs.dream_env.DreamVecEnv(ensemble=...)
        (),
        "more Ms (comma list of train-rnn run directories, trained on the same latents) to "
        "dream with beside --memory: each env's next latent comes from one of them drawn at "
        "random every step, rewards and ends are their mean; the agent sees --memory's h",
        flag="--dream-memory",
    )
    dream_penalty: float = option(  # envs.dream_env.DreamVecEnv(disagreement_penalty=...)
        0.0,
        "reward taken off each dream step per unit of the --dream-memory Ms' disagreement "
        "about the next latent (the norm of their expected next latents' std): the dream "
        "pays less where M is unsure (0: off)",
        0.0,
        1e6,
    )
    total_timesteps: int = option(50_000, "env steps", 1, 10**11, flag="--steps")
    seed: int = option(0, "seed", 0, 2**32 - 1)
    n_envs: int = option(4, "parallel envs (default: the hyperparameters' n_envs)", 1, 1024)
    obs_options: dict[str, Any] = field(default_factory=dict)
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_freq: int = option(10_000, "env steps between evaluations", 1, 10**11)
    eval_episodes: int = option(5, "episodes per evaluation", 1, 100_000)
    eval_seed: int = option(10_000, "seed of the first evaluation episode", 0, 2**32 - 1)
    device: str = option("auto", "torch device: auto, cpu, cuda or cuda:N")
    runtime: str = option(
        "auto",
        "the V's inference runtime for latent codes: auto (ONNX Runtime on the CPU where "
        "installed, else PyTorch), torch, onnxruntime or openvino; runtimes agree within "
        "float tolerance",
        choices=RUNTIMES,
    )
    deterministic_eval: bool = option(
        True, "evaluate the policy's mode, not a sample of it", flag="--stochastic-eval"
    )
    checkpoint_freq: int = option(
        10_000, "env steps between checkpoints a killed run resumes from (0: none)", 0, 10**11
    )
    max_train_seconds: float | None = option(
        None, "training wall-clock budget in seconds, evaluation excluded", 0.0, 1e9, low_open=True
    )

    def __post_init__(self) -> None:
        if self.obs not in OBS_KINDS:
            raise ValueError(f"obs must be one of {OBS_KINDS}, got {self.obs!r}")
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algorithm {self.algo!r}; choose one of {ALGOS}")
        check_ranges(self)
        if ARMS[self.obs].model is not None and not self.model_dir:
            raise ValueError(f"obs={self.obs!r} needs a pretrained model: pass --model DIR")
        if self.obs == "latent+h" and not self.memory_dir:
            raise ValueError("obs='latent+h' needs the memory model M: pass --memory DIR")
        if self.dream and self.obs != "latent+h":
            raise ValueError(
                f"training in the dream needs obs='latent+h' (the dream gives [z, h]), got {self.obs!r}"
            )
        object.__setattr__(self, "dream_ensemble", tuple(self.dream_ensemble))  # JSON: a list
        if self.dream_ensemble and not self.dream:
            raise ValueError("--dream-memory adds Ms to the dream: it needs --dream")
        if self.dream_penalty and not self.dream_ensemble:
            raise ValueError(
                "--dream-penalty weighs the disagreement of several Ms: pass --dream-memory "
                "with Ms trained on the same latents (train-rnn with other --seed values)"
            )
        unknown = set(self.obs_options) - OBS_KEYS[self.obs]
        if unknown:
            raise ValueError(
                f"unknown {self.obs} options {sorted(unknown)}; known: {sorted(OBS_KEYS[self.obs])}"
            )

    @property
    def env_id(self) -> str:
        """The env's gymnasium id."""
        return self.env.env_id

    @property
    def run_name(self) -> str:
        obs = f"{self.obs}-dream" if self.dream else self.obs
        return f"{self.env_id.replace('/', '_')}__{obs}__{self.algo}__{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the env spec as ``env_id`` and ``env_options``, then the other fields."""
        rest = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "env"}
        return self.env.to_dict() | copy.deepcopy(rest)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AgentConfig:
        d = dict(d)
        if "env_id" not in d:
            raise ValueError("incomplete agent config (no env_id)")
        env = EnvSpec.from_dict(
            {"env_id": d.pop("env_id"), "env_options": d.pop("env_options", {})}
        )
        reject_unknown_keys(cls, d, "agent config")
        try:
            return cls(env=env, **d)
        except TypeError as e:  # a required key is missing
            raise ValueError(f"incomplete agent config ({e})") from e

    def with_env(self, **changes: Any) -> AgentConfig:
        """A copy whose env spec has ``changes`` (EnvSpec fields) applied."""
        return dataclasses.replace(self, env=self.env.replace(**changes))


def agent_env_spec(
    env_id: str, model_dir: str | Path | None, given: Mapping[str, Any] | None
) -> EnvSpec:
    """An agent's env spec: the one the model records (so the agent sees the frames the model
    was trained on), with ``given`` (explicit choices by field name) checked against it;
    without a recorded spec, the env's recommended one updated by ``given``. Its backend is
    resolved.
    """
    spec = read_env_spec(model_dir) if model_dir else None
    if spec is None:
        return new_spec(env_id, given)
    return resolve_spec(spec.resolve(given, f"the model {model_dir}"))


def memory_env_given(memory_dir: str | Path, env_id: str) -> dict[str, Any]:
    """The env spec M's frames were made with, as explicit choices for an agent on ``env_id``
    (empty for an M that records none: the env's recommended spec then).

    Raises:
        ValueError: M was trained on another env (both named).
    """
    _, extra = read_memory_config(memory_dir)
    if extra.get("env_id") not in (None, env_id):
        raise ValueError(
            f"the memory model {memory_dir} was trained on {extra['env_id']}, not {env_id}"
        )
    spec = EnvSpec.from_record(extra)
    return spec.options() if spec is not None else {}


def resolve_config(
    env_id: str,
    obs: str,
    algo: str = "ppo",
    model_dir: str | None = None,
    total_timesteps: int = 50_000,
    seed: int = 0,
    hyperparams_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    env_given: Mapping[str, Any] | None = None,
    **fields: Any,
) -> AgentConfig:
    """Build an :class:`AgentConfig` from the YAML hyperparameters for ``env_id`` and ``algo``.

    ``overrides`` update the algorithm's keyword arguments; ``fields`` set other config fields.
    The env spec comes from the model's recorded one (``env_given``, explicit choices by field
    name, must agree with it), or without one from :func:`agent_env_spec`'s defaults. Its
    backend (default ``"auto"``) is resolved to the one that will run. ``model_dir``,
    ``memory_dir`` and ``dream_ensemble`` are recorded absolute (:func:`worldvae.records.record_path`).

    Raises:
        ValueError: a given env option contradicts the model's recorded spec (both named).
    """
    hp = load_hyperparams(env_id, hyperparams_file)
    algo_kwargs = dict(hp.get(algo, {}))
    algo_kwargs.update(overrides or {})
    n_envs = int(algo_kwargs.pop("n_envs", 1))
    env = agent_env_spec(env_id, model_dir, env_given)
    if fields.get("memory_dir"):
        fields["memory_dir"] = record_path(fields["memory_dir"])
    if fields.get("dream_ensemble"):
        fields["dream_ensemble"] = tuple(record_path(m) for m in fields["dream_ensemble"])
    if obs in ARMS and ARMS[obs].wrap_env is not None:  # a per-env wrapper: gymnasium's envs
        env = resolve_spec(env.replace(backend="gymnasium"))
    return AgentConfig(
        env=env,
        obs=obs,
        algo=algo,
        model_dir=record_path(model_dir) if model_dir else None,
        total_timesteps=total_timesteps,
        seed=seed,
        n_envs=fields.pop("n_envs", n_envs),
        obs_options=dict(hp.get(obs, {})),
        algo_kwargs=algo_kwargs,
        **fields,
    )
