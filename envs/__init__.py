"""The gymnasium side: pixel env factories, preprocessing, rollout collection, latent wrappers.

The latent wrappers (which need torch) are imported on first use, so collector workers that
only play envs start quickly.
"""

from typing import Any

from envs.collector import CollectResult, collect, play_episode
from envs.factory import make_env, make_vec_env, new_spec, resolve_spec
from envs.policies import BrownianPolicy, PolicySpec, RandomPolicy, SB3Policy
from envs.preprocessing import FramePreprocess, FrameTransform, preprocess_frames
from envs.registry import check_env_id
from worldvae.envspec import EnvSpec

__all__ = [
    "BrownianPolicy",
    "CollectResult",
    "EnvSpec",
    "FramePreprocess",
    "FrameTransform",
    "LatentObservation",
    "PolicySpec",
    "RandomPolicy",
    "SB3Policy",
    "VecLatentObservation",
    "check_env_id",
    "collect",
    "make_env",
    "make_vec_env",
    "new_spec",
    "play_episode",
    "preprocess_frames",
    "resolve_spec",
]


def __getattr__(name: str) -> Any:
    if name in ("LatentObservation", "VecLatentObservation"):
        from envs import latent

        return getattr(latent, name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
