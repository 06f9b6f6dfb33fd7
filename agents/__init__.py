"""The stable-baselines3 side: training, evaluation and comparison of pixel and latent agents."""

from agents.agent_config import AgentConfig, load_hyperparams, resolve_config
from agents.agent_training import AgentResult, train_agent
from agents.bundle import Bundle, load_bundle
from agents.evaluation import EvalResult, evaluate_bundle

__all__ = [
    "AgentConfig",
    "AgentResult",
    "Bundle",
    "EvalResult",
    "evaluate_bundle",
    "load_bundle",
    "load_hyperparams",
    "resolve_config",
    "train_agent",
]
