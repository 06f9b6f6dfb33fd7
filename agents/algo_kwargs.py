"""From the YAML's algorithm section to the SB3 constructor's keyword arguments.

A section holds the constructor's own arguments plus a few of ours:

- ``n_envs``: parallel envs (taken out when the config is resolved);
- ``normalize_reward``: train on rewards scaled by a running estimate of the discounted
  return's standard deviation (SB3's ``VecNormalize`` with ``norm_obs=False``); evaluation
  and every reported return stay in the env's own units;
- ``policy_kwargs``: given to the policy (see :func:`agents.bundle.policy_kwargs`);
- ``shortlist`` (0: off) and ``shortlist_episodes`` (20): keep every evaluation's policy and,
  once training ends, keep as the best policy the one of the ``shortlist`` best evaluations
  that does best on ``shortlist_episodes`` other episodes (:mod:`agents.policy_shortlist`).

``learning_rate`` and ``clip_range`` take a number or a linear schedule written as a
mapping, ``{linear: 0.0003}`` (from 0.0003 down to 0 over ``total_timesteps``) or
``{linear: [0.0003, 0.00003]}`` (from the first to the second). The schedule follows env
steps, so a run stopped early by a wall-clock budget ends before it reaches its end value.
"""

from __future__ import annotations

from typing import Any

# Our keys in an algorithm section: not constructor arguments.
EXTRA_ALGO_KEYS = ("n_envs", "normalize_reward", "shortlist", "shortlist_episodes")
# Of those, the ones that choose the best policy once training ends: a run resumes across them.
SHORTLIST_KEYS = ("shortlist", "shortlist_episodes")
SCHEDULED_KEYS = ("learning_rate", "clip_range")
# ``policy_kwargs.activation_fn`` by name (YAML holds literals only): the ``torch.nn`` class.
ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "gelu": "GELU", "elu": "ELU"}


def parse_schedule(value: Any, where: str) -> tuple[float, float] | None:
    """``(start, end)`` of a linear schedule mapping; None for a plain number.

    Raises:
        ValueError: a mapping that is not ``{linear: x}`` or ``{linear: [start, end]}`` with
            non-negative numbers.
    """
    if not isinstance(value, dict):
        return None
    example = "{linear: 0.0003} or {linear: [0.0003, 0.00003]}"
    if set(value) != {"linear"}:
        raise ValueError(f"{where} must be a number or a schedule such as {example}, got {value}")
    ends = value["linear"]
    ends = [ends, 0.0] if not isinstance(ends, list) else ends
    if len(ends) != 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in ends
    ):
        raise ValueError(
            f"{where}: a linear schedule takes one number or two ([start, end]), each >= 0, "
            f"e.g. {example}; got {value}"
        )
    return float(ends[0]), float(ends[1])


def constructor_kwargs(algo_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The SB3 constructor's arguments: schedules built, our own keys and ``policy_kwargs``
    (built by :func:`agents.bundle.policy_kwargs`) left out."""
    from stable_baselines3.common.utils import LinearSchedule

    out: dict[str, Any] = {}
    for key, value in algo_kwargs.items():
        if key in EXTRA_ALGO_KEYS or key == "policy_kwargs":
            continue
        ends = parse_schedule(value, key) if key in SCHEDULED_KEYS else None
        # SB3's progress runs from 1 (start) to 0 (end): end_fraction 1.0 spans the whole run.
        out[key] = value if ends is None else LinearSchedule(ends[0], ends[1], 1.0)
    return out
