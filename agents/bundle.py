"""Agent bundles: the SB3 zip, the resolved config, and a hash-verified copy of the model.

::

    AGENT_DIR/
      config.json      {"agent": AgentConfig, "model_sha256": ..., "status": "complete", ...}
      agent.zip        the SB3 model (loaded without unpickling, see envs.sb3_io)
      model/           the autoencoder it was trained on (latent and encoder agents)
      memory/          the memory model M (latent+h agents)
      eval.csv         periodic evaluation: steps, seconds, wall_seconds, mean_return, std_return
      tb/              TensorBoard logs
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.agent_config import AgentConfig
from agents.algo_kwargs import ACTIVATIONS
from agents.algorithms import get_algorithm
from agents.arms import get_arm
from agents.controller.cmaes import BEST_CONTROLLER_FILE, CONTROLLER_FILE
from agents.environments import build_vec_env
from envs.sb3_io import load_sb3
from worldvae.encoders import Encoder, load_encoder
from worldvae.vae.io import CONFIG_NAME, WEIGHTS_NAME, model_sha256

CONFIG_FILE, AGENT_FILE, MODEL_DIR, EVAL_CSV = "config.json", "agent.zip", "model", "eval.csv"
MEMORY_DIR = "memory"
DREAM_ENSEMBLE_DIR = "dream_memory"  # the dream's other Ms: dream_memory/1, dream_memory/2, ...
BEST_AGENT_FILE = "best_agent.zip"  # the policy of the best periodic evaluation


def copy_model(src: str | Path, bundle: Path) -> str:
    """Copy the model (a run directory resolves to its best checkpoint); return its hash."""
    src = Path(src)
    if (src / "checkpoints" / "best" / CONFIG_NAME).is_file():
        src = src / "checkpoints" / "best"
    load_encoder(src, device="cpu")  # refuse a broken model before training on it
    dst = bundle / MODEL_DIR
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(src / name, dst / name)
    return model_sha256(dst)


def copy_memory(src: str | Path, bundle: Path, vae_sha256: str, into: str = MEMORY_DIR) -> str:
    """Copy M (a run directory resolves to its best checkpoint) into the bundle's folder
    ``into``; return its hash.

    Raises:
        ValueError: M was trained on latents of another VAE than the bundle's.
    """
    from worldvae.memory import read_memory_config
    from worldvae.vae.io import resolve_model_dir

    src = resolve_model_dir(src)
    _, extra = read_memory_config(src)
    if extra.get("vae_sha256") not in (None, vae_sha256):
        raise ValueError(
            f"the memory model {src} was trained on latents of another VAE (sha256 "
            f"{str(extra['vae_sha256'])[:12]}, this agent's is {vae_sha256[:12]}); pass the VAE "
            "it was trained with, or re-run encode-data and train-rnn with this one"
        )
    dst = bundle / into
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(src / name, dst / name)
    return model_sha256(dst)


def policy_sha256(bundle: str | Path, which: str) -> str | None:
    """Hash of the file holding ``bundle``'s ``which`` policy (``"best"`` or ``"final"``; an
    SB3 agent's zip or a controller's safetensors), or None where there is none: what tells a
    re-trained policy from the one a kept score was played with."""
    names = (
        (BEST_AGENT_FILE, BEST_CONTROLLER_FILE)
        if which == "best"
        else (AGENT_FILE, CONTROLLER_FILE)
    )
    for name in names:
        if (Path(bundle) / name).is_file():
            return hashlib.sha256((Path(bundle) / name).read_bytes()).hexdigest()
    return None


def is_complete(bundle: str | Path) -> bool:
    path = Path(bundle) / CONFIG_FILE
    try:
        return json.loads(path.read_text()).get("status") == "complete"
    except (OSError, json.JSONDecodeError):
        return False


def policy_name(cfg: AgentConfig) -> str:
    """The arm's policy: an MLP over codes or states, a CNN over images; with a recurrent
    algorithm (``recurrentppo``) the same with an LSTM after the features (``MlpLstmPolicy``,
    ``CnnLstmPolicy``)."""
    return get_algorithm(cfg.algo).policy(get_arm(cfg.obs).policy)


def policy_kwargs(cfg: AgentConfig, bundle: Path) -> dict[str, Any]:
    """The policy kwargs of ``cfg``, with the encoder extractor for ``obs="encoder"``."""
    from torch import nn

    kwargs = dict(cfg.algo_kwargs.get("policy_kwargs", {}))
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = getattr(nn, ACTIVATIONS[kwargs["activation_fn"]])
    if cfg.obs == "encoder":
        from agents.extractor import PretrainedEncoderExtractor

        kwargs["features_extractor_class"] = PretrainedEncoderExtractor
        kwargs["features_extractor_kwargs"] = {
            "model_dir": str(bundle / MODEL_DIR),
            "freeze": bool(cfg.obs_options.get("freeze", True)),
        }
    return kwargs


@dataclass
class Bundle:
    """A loaded agent bundle."""

    path: Path
    config: AgentConfig
    agent: Any
    model: Encoder | None
    info: dict[str, Any]
    memory: Any = None

    def make_env(self, n_envs: int = 1, seed: int = 0) -> Any:
        """A VecEnv with the observations this agent was trained on (the real env)."""
        return build_vec_env(self.config, n_envs, seed, self.model, memory=self.memory)


AGENT_CHOICES = ("final", "best")


def check_finite_policy(agent: Any, agent_file: Path) -> None:
    """Refuse an SB3 agent whose policy holds NaN or infinity: every action would be garbage.

    Raises:
        ValueError: naming the file.
    """
    bad = [n for n, p in agent.policy.named_parameters() if not bool(p.isfinite().all())]
    if bad:
        raise ValueError(
            f"{agent_file} holds non-finite weights (NaN or infinity, in {', '.join(bad[:3])}); "
            "the policy is damaged (its training diverged, or the file was altered): re-train "
            "the agent, or evaluate its other policy (--which final or best)"
        )


def read_agent_info(path: Path) -> dict[str, Any]:
    """The ``config.json`` of the finished agent directory ``path``.

    Raises:
        FileNotFoundError: ``path`` holds no ``config.json``, holds an unfinished run (its
            policy not written yet: the message says how to resume it), or lacks its policy.
        ValueError: the ``config.json`` is unreadable or not an agent's (a VAE's or M's run
            directory, say).
    """
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"{path} is not an agent directory (it lacks {CONFIG_FILE}); train one with "
            "`worldvae train-agent` and pass its --out"
        )
    try:
        info = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_file} is unreadable ({e}); re-train the agent") from e
    if not isinstance(info, dict) or "agent" not in info:
        raise ValueError(
            f"{path} is not an agent directory: its {CONFIG_FILE} is not an agent's (a VAE's "
            "or M's run directory?); pass the --out of a `worldvae train-agent` run"
        )
    if info.get("status") != "complete":
        raise FileNotFoundError(
            f"{path} holds an unfinished train-agent run (no final policy yet); resume it by "
            "re-running the `worldvae train-agent` command that started it (the same options "
            "and --out: it continues from its last checkpoint), then evaluate it"
        )
    if not ((path / AGENT_FILE).is_file() or (path / CONTROLLER_FILE).is_file()):
        raise FileNotFoundError(
            f"{path} is a finished agent directory without its policy ({AGENT_FILE} or "
            f"{CONTROLLER_FILE}); restore it or re-train the agent with --overwrite"
        )
    return info


def load_bundle(path: str | Path, device: str = "auto", which: str = "final") -> Bundle:
    """Load an agent directory, refusing one whose model files changed since training.

    ``which`` picks the policy: ``"final"`` (at the end of training) or ``"best"`` (the one
    of the best periodic evaluation, kept as ``best_agent.zip``).

    Raises:
        FileNotFoundError: not an agent directory, an unfinished one, or ``"best"`` asked of
            one that kept no best policy.
        ValueError: the model's hash differs from the one recorded at training time.
    """
    path = Path(path)
    info = read_agent_info(path)
    cfg = AgentConfig.from_dict(info["agent"])
    if which not in AGENT_CHOICES:
        raise ValueError(f"which must be one of {AGENT_CHOICES}, got {which!r}")
    algorithm = get_algorithm(cfg.algo)
    agent_file = path / (BEST_AGENT_FILE if which == "best" else AGENT_FILE)
    if which == "best" and algorithm.is_sb3 and not agent_file.is_file():
        raise FileNotFoundError(
            f"{path} kept no best policy ({BEST_AGENT_FILE}: agents trained before it was kept "
            "have only their final one); use the final agent"
        )
    model = None
    if get_arm(cfg.obs).model is not None:
        recorded = info.get("model_sha256")
        actual = model_sha256(path / MODEL_DIR)
        if actual != recorded:
            raise ValueError(
                f"the model in {path / MODEL_DIR} changed since the agent was trained on it "
                f"(sha256 {actual[:12]} != recorded {recorded and recorded[:12]}); restore it or re-train the agent"
            )
        model = load_encoder(path / MODEL_DIR, device=device)
    memory = None
    if get_arm(cfg.obs).needs_memory:
        from worldvae.memory import load_memory

        actual = model_sha256(path / MEMORY_DIR)
        if actual != info.get("memory_sha256"):
            raise ValueError(
                f"the memory model in {path / MEMORY_DIR} changed since the agent was trained "
                "on it; restore it or re-train the agent"
            )
        memory = load_memory(path / MEMORY_DIR, device=device)[0]
    probe = build_vec_env(cfg, 1, 0, model, memory=memory)
    if algorithm.load is not None:  # an algorithm with its own bundle files
        agent = algorithm.load(path, probe.observation_space, probe.action_space, which)
    else:
        agent = load_sb3(
            algorithm.sb3_class(),
            agent_file,
            probe.observation_space,
            probe.action_space,
            policy_name(cfg),
            policy_kwargs(cfg, path),
            device=device,
        )
        check_finite_policy(agent, agent_file)
    probe.close()
    return Bundle(path=path, config=cfg, agent=agent, model=model, info=info, memory=memory)
