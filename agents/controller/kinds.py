"""The controllers World Models' recipe trains on ``[z, h]`` after M, by name.

Each kind is one of the methods the field used for C: CMA-ES on a linear C in the real env
(World Models' own controller), CMA-ES on a C with one hidden layer (its "V + hidden layer"
row), and C trained only inside M's dream (CMA-ES, or PPO), scored in the real env like the
others. The pipeline's ``controllers.kinds`` names them (:mod:`agents.world_models`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ControllerKind:
    """One way to train C.

    Attributes:
        name: its name in ``controllers.kinds``.
        algo: the training algorithm (``"cmaes"`` or an SB3 algorithm's name).
        dream: trained inside M's dream (zero real env steps spent on C).
        hidden: C has one hidden layer (CMA-ES only; its width is ``controllers.hidden``).
        title: how the report names it.
    """

    name: str
    algo: str
    dream: bool
    hidden: bool
    title: str


CONTROLLER_KINDS: dict[str, ControllerKind] = {
    k.name: k
    for k in (
        ControllerKind("cmaes", "cmaes", False, False, "V + M + C: linear C, CMA-ES (real env)"),
        ControllerKind(
            "cmaes-hidden", "cmaes", False, True, "V + M + C: C with a hidden layer, CMA-ES"
        ),
        ControllerKind("dream-cmaes", "cmaes", True, False, "C trained only in M's dream: CMA-ES"),
        ControllerKind("dream-ppo", "ppo", True, False, "PPO trained only in M's dream"),
    )
}
