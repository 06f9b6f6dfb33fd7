"""The gymnasium side: pixel env factories, preprocessing, rollout collection, latent wrappers."""

from envs.collector import CollectResult, collect, play_episode
from envs.factory import env_options, make_env, make_env_from_options
from envs.policies import BrownianPolicy, PolicySpec, RandomPolicy, SB3Policy
from envs.preprocessing import ActionRepeat, FramePreprocess, PixelObservation
from envs.registry import check_env_id

__all__ = [
    "ActionRepeat",
    "BrownianPolicy",
    "CollectResult",
    "FramePreprocess",
    "PixelObservation",
    "PolicySpec",
    "RandomPolicy",
    "SB3Policy",
    "check_env_id",
    "collect",
    "env_options",
    "make_env",
    "make_env_from_options",
    "play_episode",
]
