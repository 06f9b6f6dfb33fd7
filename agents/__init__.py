"""The stable-baselines3 side: training, evaluation and comparison of pixel and latent agents."""

from agents.agent_config import AgentConfig, load_hyperparams, resolve_config
from agents.agent_training import AgentResult, train_agent
from agents.bundle import Bundle, load_bundle
from agents.evaluation import (
    EpisodeVideo,
    EvalResult,
    VideoOptions,
    evaluate_bundle,
    record_episode_video,
)

__all__ = [
    "AgentConfig",
    "AgentResult",
    "Bundle",
    "EpisodeVideo",
    "EvalResult",
    "VideoOptions",
    "evaluate_bundle",
    "load_bundle",
    "load_hyperparams",
    "record_episode_video",
    "resolve_config",
    "train_agent",
]
