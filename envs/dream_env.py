"""``DreamEnv``: a gymnasium env that runs entirely inside M (World Models section 4.4).

An episode starts from a real start latent (the first frame of a recorded episode, as encoded
by V) with M's state at zero; each step M reads ``(z_t, a_t)``, predicts the reward and the done
flag, and the next latent is sampled from its mixture at temperature ``tau``. Observations are
``[z, h]``, the same as the ``latent+h`` wrappers give in the real env, so an agent trained in
the dream acts in the real env unchanged. A dream step costs one LSTM step, not a rendered
frame.

``DreamVecEnv(..., ensemble=[M2, M3, ...])`` dreams with several Ms trained on the same data:
every member reads the same ``(z_t, a_t)``; each env's next latent is drawn from one member
chosen at random for that env and step, and the reward and the done probability are the
members' means. The observed ``h`` stays the first M's, the one the real env's ``latent+h``
wrapper runs. A controller that exploits one M's error then meets it only on the steps that
M is drawn, and its reward error is averaged with the others' (the idea behind ensembles of
learned models in model-based RL).

``disagreement_penalty=lambda`` (with an ensemble) takes the members' disagreement about the
next latent off every dreamed reward: ``r - lambda * ||std_m(E_m[z_{t+1}])||``, the standard
deviation over members of each member's expected next latent, its norm over the latent's
dimensions. Where the Ms agree (states like those they were trained on) the dream pays as
before; where they part (states none of them saw) it pays less, so a controller is not paid
for driving the dream where M is wrong (the uncertainty penalty of MOPO, Yu et al. 2020).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.vec_env import VecEnv

from envs.latent_memory import check_memory_fits, memory_space, resolve_memory
from worldvae.data.latents import ActionSpec, LatentDataset
from worldvae.memory import MDNRNN
from worldvae.memory.model import MDNOutput, disagreement, mixture_noise, sample_next
from worldvae.vae import Autoencoder


def start_latents_from(data: str | Path | np.ndarray) -> np.ndarray:
    """Start latents ``(N, D)``: an array as is, or the first-frame means of a latent dataset."""
    if isinstance(data, np.ndarray):
        return np.asarray(data, np.float32)
    mu, _ = LatentDataset(data, val_fraction=0.0).start_latents("all")
    return mu.astype(np.float32)


class DreamEnv(gym.Env):
    """Steps M at temperature ``tau``; rewards and ends come from M.

    Args:
        memory: M (loaded, or a memory model / ``train-rnn`` run directory).
        start_latents: ``(N, D)`` real start latents, or a latent dataset directory.
        action_space: the real env's action space (Discrete or Box), which M was trained on.
        temperature: ``tau`` (default: M's configured temperature).
        done_threshold: the episode ends when M's done probability exceeds this.
        max_episode_steps: truncation, as the real env's time limit.
        vae: decodes ``z`` for ``render()`` (``rgb_array``), optional.
        device: where models given as paths are loaded.

    Observation space: float32 ``Box((D + H,))``.

    Example:
        >>> env = DreamEnv("runs/rnn/cp", "runs/latents/cp", gym.spaces.Discrete(2))
        >>> obs, info = env.reset(seed=0)
    """

    def __init__(
        self,
        memory: MDNRNN | str | Path,
        start_latents: np.ndarray | str | Path,
        action_space: gym.Space,
        temperature: float | None = None,
        done_threshold: float = 0.5,
        max_episode_steps: int = 1000,
        vae: Autoencoder | None = None,
        render_mode: str | None = None,
        device: str = "cpu",
    ):
        self.memory = resolve_memory(memory, device)
        self.action_encoding: ActionSpec = check_memory_fits(
            "DreamEnv", self.memory, vae, action_space
        )
        starts = start_latents_from(start_latents)
        if starts.ndim != 2 or starts.shape[1] != self.memory.config.latent_dim or not len(starts):
            raise ValueError(
                f"DreamEnv needs start latents (N, {self.memory.config.latent_dim}), got "
                f"{starts.shape}; pass the latent dataset M was trained on"
            )
        self.starts = starts
        self.temperature = float(temperature or self.memory.config.temperature)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"DreamEnv renders 'rgb_array' only, got {render_mode!r}")
        if render_mode == "rgb_array" and vae is None:
            raise ValueError("DreamEnv(render_mode='rgb_array') needs vae= to decode the dream")
        self.metadata = {"render_modes": ["rgb_array"]}
        self.render_mode = render_mode
        self.vae = vae
        self.done_threshold = done_threshold
        self.max_episode_steps = max_episode_steps
        self.action_space = action_space
        self.observation_space = memory_space(self.memory)
        self._generator = torch.Generator(device=self.memory.device)
        self._z = torch.zeros(1, self.memory.config.latent_dim, device=self.memory.device)
        self._state = self.memory.initial_state(1)
        self._hidden = np.zeros(self.memory.config.hidden_size, np.float32)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._z[0].cpu().numpy(), self._hidden]).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._generator.manual_seed(int(self.np_random.integers(2**62)))
        i = int(self.np_random.integers(len(self.starts)))
        self._z = torch.from_numpy(self.starts[i][None].copy()).to(self.memory.device)
        self._state = self.memory.initial_state(1)
        self._hidden[:] = 0.0
        self._t = 0
        return self._obs(), {"start_index": i}

    @torch.inference_mode()
    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        a = torch.from_numpy(self.action_encoding.encode(np.asarray(action)[None])).to(
            self.memory.device
        )
        out, self._state = self.memory.step(self._z, a, self._state)
        reward = float(out.reward[0, -1])
        p_done = float(torch.sigmoid(out.done_logit[0, -1]))
        self._z = sample_next(out, self.temperature, self._generator)
        self._hidden = out.hidden[0, -1].float().cpu().numpy()
        self._t += 1
        terminated = p_done > self.done_threshold
        truncated = not terminated and self._t >= self.max_episode_steps
        return self._obs(), reward, terminated, truncated, {"done_probability": p_done}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self.vae is None:
            return None
        return np.asarray(self.vae.decode(self._z[0].cpu().numpy()))


def _ensemble_step(outs: list[MDNOutput], drawn: np.ndarray) -> MDNOutput:
    """One step of an ensemble of Ms as one :class:`MDNOutput` ``(B, 1, ...)``: env ``i``'s
    mixture from member ``drawn[i]`` of ``outs`` (each member's step, ``(B, 1, ...)``), the
    reward the members' mean and the done logit that of their mean probability; ``hidden``
    the first member's. Members with fewer Gaussians are padded with components of zero
    weight."""
    rows = torch.arange(len(drawn), device=outs[0].mu.device)
    pick = torch.from_numpy(drawn).to(rows.device)
    k = max(o.mu.shape[-1] for o in outs)  # members may have other numbers of Gaussians

    def drawn_rows(name: str, fill: float) -> torch.Tensor:
        padded = [F.pad(getattr(o, name), (0, k - o.mu.shape[-1]), value=fill) for o in outs]
        return torch.stack(padded)[pick, rows]

    p_done = torch.stack([torch.sigmoid(o.done_logit) for o in outs]).mean(dim=0)
    return MDNOutput(
        log_pi=drawn_rows("log_pi", -math.inf),  # padded components are never drawn
        mu=drawn_rows("mu", 0.0),
        log_sigma=drawn_rows("log_sigma", 0.0),
        reward=torch.stack([o.reward for o in outs]).mean(dim=0),
        done_logit=torch.logit(p_done),
        hidden=outs[0].hidden,
    )


class DreamVecEnv(VecEnv):
    """``n_envs`` dreams stepped together: one batched M step and one sample per VecEnv step.

    The same dream as :class:`DreamEnv` (start latents, temperature, done threshold, time
    limit, ``[z, h]`` observations), with SB3's VecEnv semantics: an env whose episode ends
    is reset at once, its last observation in ``infos[i]["terminal_observation"]``, and M's
    state for that env zeroed, so no transition mixes two episodes. One
    ``torch.Generator`` draws every env's next latent; :meth:`seed` fixes it and the start
    choices.

    Args:
        memory, start_latents, action_space, temperature, done_threshold, max_episode_steps,
        device: as for :class:`DreamEnv`.
        n_envs: dreams stepped together.
        ensemble: more Ms (loaded, or run directories) dreaming beside ``memory`` (see the
            module docstring); each must read the same latents and actions. Empty: ``memory``
            alone. An ensemble of copies of ``memory`` dreams exactly what ``memory`` alone
            does for the same seed.
        disagreement_penalty: lambda >= 0, the reward taken off per unit of the members'
            disagreement (see the module docstring; ``infos[i]["disagreement"]`` holds it
            every step). Needs an ensemble.

    Raises:
        ValueError: a member of ``ensemble`` reads other latents or actions than ``memory``;
            a negative or non-finite penalty, or a penalty without an ensemble.
    """

    def __init__(
        self,
        memory: MDNRNN | str | Path,
        start_latents: np.ndarray | str | Path,
        action_space: gym.Space,
        n_envs: int,
        temperature: float | None = None,
        done_threshold: float = 0.5,
        max_episode_steps: int = 1000,
        device: str = "cpu",
        ensemble: Sequence[MDNRNN | str | Path] = (),
        disagreement_penalty: float = 0.0,
    ):
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if not (math.isfinite(disagreement_penalty) and disagreement_penalty >= 0):
            raise ValueError(f"disagreement_penalty must be >= 0, got {disagreement_penalty}")
        if disagreement_penalty and not ensemble:
            raise ValueError(
                "disagreement_penalty weighs the disagreement of several Ms: pass an ensemble "
                "of Ms trained on the same latents (train-rnn with other --seed values)"
            )
        self.disagreement_penalty = float(disagreement_penalty)
        one = DreamEnv(  # checks M, the action space, the starts and tau
            memory, start_latents, action_space, temperature, done_threshold,
            max_episode_steps, device=device,
        )  # fmt: skip
        self.render_mode = None  # read by VecEnv.__init__ through get_attr
        super().__init__(n_envs, one.observation_space, action_space)
        self.memory, self.starts, self.temperature = one.memory, one.starts, one.temperature
        self.action_encoding = one.action_encoding
        self.ensemble = [resolve_memory(m, device) for m in ensemble]
        for k, member in enumerate(self.ensemble, start=1):
            check_memory_fits(f"DreamVecEnv ensemble member {k}", member, None, action_space)
            if member.config.latent_dim != self.memory.config.latent_dim:
                raise ValueError(
                    f"DreamVecEnv ensemble member {k} reads latents of size "
                    f"{member.config.latent_dim}, M reads {self.memory.config.latent_dim}; "
                    "train every member on the same latent dataset"
                )
            if member.device != self.memory.device:
                member.to(self.memory.device)
        self.done_threshold, self.max_episode_steps = done_threshold, max_episode_steps
        self._generator = torch.Generator(device=self.memory.device)
        self._rng = np.random.default_rng()
        self._member_rng = np.random.default_rng()
        self._z = torch.zeros(n_envs, self.memory.config.latent_dim, device=self.memory.device)
        self._state = self.memory.initial_state(n_envs)
        self._member_states = [m.initial_state(n_envs) for m in self.ensemble]
        self._hidden = np.zeros((n_envs, self.memory.config.hidden_size), np.float32)
        self._t = np.zeros(n_envs, np.int64)
        self._actions: np.ndarray | None = None
        self._next_seed: int | None = None
        self._next_seeds: list[int] | None = None
        # after seed_each: per distinct seed, its dream's generator and member draws and its envs
        self._groups: (
            list[tuple[torch.Generator, np.random.Generator, np.ndarray, torch.Tensor]] | None
        ) = None

    @torch.inference_mode()
    def _restart(self, envs: np.ndarray, picks: np.ndarray | None = None) -> None:
        """New start latents (``picks``, indices into the starts; None: drawn) and zero M
        state for the envs ``envs`` (indices)."""
        if picks is None:
            picks = self._rng.integers(len(self.starts), size=len(envs))
        self._z[envs] = torch.from_numpy(self.starts[picks]).to(self.memory.device)
        for h, c in [self._state, *self._member_states]:
            h[:, envs] = 0.0
            c[:, envs] = 0.0
        self._hidden[envs] = 0.0
        self._t[envs] = 0

    def _obs(self) -> np.ndarray:
        z = self._z.float().cpu().numpy()
        return np.concatenate([z, self._hidden], axis=1).astype(np.float32)

    def reset(self) -> np.ndarray:
        if self._next_seeds is not None:
            return self._reset_each(self._next_seeds)
        if self._next_seed is not None:
            self._rng, self._generator, self._member_rng = self._streams(self._next_seed)
            self._next_seed = None
        self._groups = None
        self._restart(np.arange(self.num_envs))
        return self._obs()

    def _streams(
        self, seed: int
    ) -> tuple[np.random.Generator, torch.Generator, np.random.Generator]:
        """The draws of a dream seeded ``seed``: its stream of start choices, its generator of
        M's samples (seeded by that stream's first draw) and its stream of ensemble members."""
        rng = np.random.default_rng(seed)
        generator = torch.Generator(device=self.memory.device)
        generator.manual_seed(int(rng.integers(2**62)))
        return rng, generator, np.random.default_rng([seed, 1])

    @torch.inference_mode()
    def _reset_each(self, seeds: list[int]) -> np.ndarray:
        """Reset env ``i`` as a one-env dream seeded ``seeds[i]`` resets (its start latent), and
        give the envs of each distinct seed that dream's own draws of M's samples (and of the
        ensemble member) from then on (see :meth:`seed_each`)."""
        self._next_seeds = None
        streams = {s: self._streams(s) for s in dict.fromkeys(seeds)}
        first = {
            s: int(rng.integers(len(self.starts), size=1)[0]) for s, (rng, _, _) in streams.items()
        }
        self._rng = streams[seeds[0]][0]  # later restarts: env 0's stream, as its dream's
        device = self.memory.device
        self._groups = []
        for s, (_, generator, member_rng) in streams.items():
            envs = [i for i, x in enumerate(seeds) if x == s]
            self._groups.append(
                (generator, member_rng, np.asarray(envs), torch.as_tensor(envs, device=device))
            )
        self._restart(np.arange(self.num_envs), np.asarray([first[s] for s in seeds]))
        return self._obs()

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seeds the next :meth:`reset` (start choices and M's samples), as SB3 does."""
        self._next_seed, self._next_seeds = seed, None
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def seed_each(self, seeds: Sequence[int]) -> None:
        """Seed the next :meth:`reset` env by env: env ``i`` dreams what this dream with one env
        and ``seed(seeds[i])`` would (its start latent, then M's samples and, with an
        ensemble, the member drawn each step), until its episode ends; envs given the same
        seed share those draws (common random numbers: a batch of CMA-ES rollouts scores
        every candidate on the same dreams). Restarts after an episode's end draw their start
        from the first seed's stream; a later :meth:`seed` or plain :meth:`reset` returns to
        one generator for all envs.

        Raises:
            ValueError: not one seed per env.
        """
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed_each needs {self.num_envs} seeds, got {len(seeds)}")
        self._next_seeds, self._next_seed = [int(s) for s in seeds], None

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    @torch.inference_mode()
    def step_wait(self) -> Any:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async(actions)")
        a = torch.from_numpy(self.action_encoding.encode(self._actions)).to(self.memory.device)
        self._actions = None
        out, self._state = self.memory.step(self._z, a, self._state)
        spread = None
        if self.ensemble:
            outs = [out]
            for k, member in enumerate(self.ensemble):
                member_out, self._member_states[k] = member.step(self._z, a, self._member_states[k])
                outs.append(member_out)
            dream = _ensemble_step(outs, self._members_drawn(len(outs)))
            spread = disagreement(outs)[:, -1].cpu().numpy().astype(np.float32)
        else:
            dream = out
        rewards = dream.reward[:, -1].float().cpu().numpy().astype(np.float32)
        if spread is not None and self.disagreement_penalty:
            rewards -= np.float32(self.disagreement_penalty) * spread
        p_done = torch.sigmoid(dream.done_logit[:, -1]).float().cpu().numpy()
        self._z = sample_next(dream, self.temperature, self._generator, self._group_noise())
        self._hidden = out.hidden[:, -1].float().cpu().numpy()
        self._t += 1
        terminated = p_done > self.done_threshold
        truncated = ~terminated & (self._t >= self.max_episode_steps)
        dones = terminated | truncated
        obs = self._obs()
        infos: list[dict[str, Any]] = [{"done_probability": float(p)} for p in p_done]
        if spread is not None:
            for info, d in zip(infos, spread, strict=True):
                info["disagreement"] = float(d)
        ended = np.flatnonzero(dones)
        for i in ended:
            infos[i]["terminal_observation"] = obs[i].copy()
            infos[i]["TimeLimit.truncated"] = bool(truncated[i])
        if len(ended):
            self._restart(ended)
            obs[ended] = self._obs()[ended]
        return obs, rewards, dones, infos

    def _members_drawn(self, n_members: int) -> np.ndarray:
        """The member each env's next latent comes from this step ``(N,)``."""
        if self._groups is None:
            return self._member_rng.integers(n_members, size=self.num_envs)
        drawn = np.empty(self.num_envs, np.int64)
        for _, member_rng, envs, _ in self._groups:
            drawn[envs] = member_rng.integers(n_members, size=1)[0]
        return drawn

    def _group_noise(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """After :meth:`seed_each`, each seed's draws for its envs; else None (one generator)."""
        if self._groups is None:
            return None
        d, device = self.memory.config.latent_dim, self.memory.device
        u = torch.empty(self.num_envs, d, device=device)
        eps = torch.empty(self.num_envs, d, device=device)
        for gen, _, _, index in self._groups:
            u1, e1 = mixture_noise(1, d, gen, device)
            u[index], eps[index] = u1, e1
        return u, eps

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kw: Any) -> list[Any]:
        raise AttributeError(f"DreamVecEnv has no per-env method {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices: Any) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)
