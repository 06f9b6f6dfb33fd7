"""Compatibility: what the pre-refactor code wrote still loads, and gives the same outputs.

``tests/fixtures/compat_v1/`` holds a dataset, a VAE run, a latent dataset, an M run and three
agent bundles written by the code at commit 41950323feadad9697657967f9193f7491ebb4eb, with that
code's outputs on them (``expected.npz``, ``expected.json``); ``make_fixtures.py`` there made
them (never re-run it with the code under test). Each test copies the fixtures into its
``tmp_path`` first. Outputs compare with tight tolerances, data exactly.

Entry points are the public ones where they exist (``worldvae.load_model``,
``envs.make_env``, the ``worldvae`` command line); the internal modules used are
imported in the one block marked below, the only place to update when modules move.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # headless rendering

# ---- Project imports. Internal module paths move in refactors: update them here only. ----
import worldvae
from agents import load_bundle  # agent bundles, loaded without unpickling
from envs import make_env
from worldvae.data import EpisodeDataset, load_episode
from worldvae.data.latents import LatentDataset, read_latent_episode
from worldvae.envspec import EnvSpec, read_env_spec
from worldvae.memory import load_memory


def spec_as_dict(spec: Any) -> dict[str, Any]:
    """The env spec a model records (``read_env_spec``), as recorded in expected.json."""
    return {"env_id": spec.env_id, "options": spec.options()}


def spec_of(record: dict[str, Any]) -> Any:
    """The env spec of a record in expected.json (its ``env_id`` and ``env_options``)."""
    return EnvSpec.from_dict({"env_id": record["env_id"], "env_options": record["env_options"]})


# ---- end of the project imports ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "compat_v1"
AGENTS = ("agent_latent", "agent_memory", "agent_cmaes")
TOL = {"rtol": 1e-5, "atol": 1e-6}  # float32 on the CPU; only thread counts may differ


def sha256_array(a: np.ndarray) -> str:
    """As ``make_fixtures.sha256_array``: dtype, shape and bytes (C order)."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def run_worldvae(*args: Any, cwd: Path) -> str:
    """``python -m worldvae ARGS`` on this checkout; its stdout (fails on a non-zero exit)."""
    env = os.environ | {
        "SDL_VIDEODRIVER": "dummy",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    r = subprocess.run(
        [sys.executable, "-m", "worldvae", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, f"worldvae {args} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture
def compat(tmp_path: Path) -> Path:
    """A private copy of the fixtures (tests never touch tests/fixtures)."""
    dst = tmp_path / "compat_v1"
    shutil.copytree(FIXTURES, dst, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dst


@pytest.fixture
def record(compat: Path) -> dict[str, Any]:
    return dict(json.loads((compat / "expected.json").read_text()))


@pytest.fixture
def arrays(compat: Path) -> dict[str, np.ndarray]:
    with np.load(compat / "expected.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_the_fixtures_were_made_by_the_pre_change_code(record):
    assert record["code_commit"] == "41950323feadad9697657967f9193f7491ebb4eb"
    assert not record["code_modified"]


def test_dataset_reads_back_exactly(compat, record, arrays):
    exp = record["dataset"]
    ds = EpisodeDataset(compat / "data")
    m = ds.manifest
    assert (m.env_id, m.env_options) == (exp["env_id"], exp["env_options"])
    assert m.env_spec == spec_of(exp)
    assert list(m.frame_shape) == exp["frame_shape"] and m.seed == exp["seed"]
    assert (m.policy, m.state_names) == (exp["policy"], exp["state_names"])
    assert len(ds.episodes) == exp["n_episodes"] and ds.n_frames() == exp["n_frames"]
    assert [e.index for e in ds.split("train")] == exp["train_episodes"]
    assert [e.index for e in ds.split("val")] == exp["val_episodes"]
    frames = []
    for info, row in zip(ds.episodes, exp["episodes"], strict=True):
        assert info.path.name == row["file"]
        ep = load_episode(info.path)
        assert (ep.seed, ep.length, ep.episode_return) == (
            row["seed"],
            row["length"],
            row["return"],
        )
        assert ep.actions[:5].tolist() == row["first_actions"]
        assert ep.rewards[:3].tolist() == row["first_rewards"]
        assert ep.frames[0, 0, 0].tolist() == row["first_pixel"]
        for key, a in row["arrays"].items():
            got = getattr(ep, key)
            assert (got.dtype.str, list(got.shape)) == (a["dtype"], a["shape"]), key
            assert sha256_array(got) == a["sha256"], f"{info.path.name}: {key} differ"
        frames.append(ep.frames)
    frames = np.concatenate(frames)
    assert sha256_array(frames) == exp["all_frames_sha256"]
    np.testing.assert_array_equal(frames[arrays["vae_frame_index"]], arrays["vae_frames"])


def test_the_recorded_env_spec_replays_the_dataset(compat, record):
    """The manifest's env spec rebuilds the env: same frames, same ends (time limit 20)."""
    ds = EpisodeDataset(compat / "data")
    for info in ds.episodes:
        ep = load_episode(info.path)
        env = make_env(ds.manifest.env_spec)
        try:
            frame, _ = env.reset(seed=ep.seed)
            frames = [frame]
            for a in ep.actions:
                frame, _, terminated, truncated, _ = env.step(a)
                frames.append(frame)
        finally:
            env.close()
        np.testing.assert_array_equal(np.stack(frames), ep.frames)
        assert (terminated, truncated) == (bool(ep.terminated[-1]), bool(ep.truncated[-1]))
    assert any(e["truncated_last"] for e in record["dataset"]["episodes"])


def test_vae_loads_and_encodes_and_decodes_as_before(compat, record, arrays):
    exp = record["vae"]
    for path in (compat / "vae", compat / "vae" / "checkpoints" / "best"):
        model = worldvae.load_model(path, device="cpu")
        assert model.latent_dim == exp["latent_dim"]
        assert list(model.config.frame_shape) == exp["config"]["frame_shape"]
        np.testing.assert_allclose(model.encode(arrays["vae_frames"]), arrays["vae_encode"], **TOL)
        decoded = model.decode(arrays["vae_decode_latents"])
        assert decoded.dtype == np.uint8 and decoded.shape == arrays["vae_decode"].shape
        diff = np.abs(decoded.astype(np.int16) - arrays["vae_decode"].astype(np.int16))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # a rounding may flip
        np.testing.assert_allclose(
            model.anomaly_score(arrays["vae_frames"]), arrays["vae_anomaly_score"], **TOL
        )
    spec = read_env_spec(compat / "vae")
    assert spec_as_dict(spec) == exp["env_spec"]
    assert spec == spec_of(
        {"env_id": exp["env_spec"]["env_id"], "env_options": exp["env_spec"]["options"]}
    )


@pytest.mark.slow
def test_cli_encodes_the_dataset_with_the_vae_as_before(compat, record, tmp_path):
    """``encode-data`` takes the old dataset and VAE run, and gives the old latent dataset
    (and the same model hash: bundles and latent datasets record it)."""
    out = tmp_path / "latents_again"
    run_worldvae(
        "encode-data", "--data", compat / "data", "--model", compat / "vae", "--out", out,
        "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    again = LatentDataset(out)
    assert again.manifest.model_sha256 == record["latents"]["model_sha256"]
    assert [e.path.name for e in again.episodes] == [
        e["file"] for e in record["latents"]["episodes"]
    ]
    for info in again.episodes:
        new = read_latent_episode(info.path)
        old = read_latent_episode(compat / "latents" / "episodes" / info.path.name)
        for key in ("mu", "logvar"):
            np.testing.assert_allclose(new[key], old[key], **TOL)
        for key in ("actions", "rewards", "terminated", "truncated", "seed"):
            np.testing.assert_array_equal(new[key], old[key])


def test_latent_dataset_reads_back_exactly(compat, record):
    exp = record["latents"]
    lds = LatentDataset(compat / "latents")
    assert (lds.latent_dim, lds.action_dim) == (exp["latent_dim"], exp["action_dim"])
    m = lds.manifest
    assert (m.env_id, m.source_manifest["env_options"]) == (exp["env_id"], exp["env_options"])
    assert m.env_spec == spec_of(exp)
    assert (m.action, m.model_sha256) == (exp["action"], exp["model_sha256"])
    for info, row in zip(lds.episodes, exp["episodes"], strict=True):
        assert info.path.name == row["file"]
        d = read_latent_episode(info.path)
        assert sorted(d) == sorted(row["arrays"])
        for key, a in row["arrays"].items():
            assert (d[key].dtype.str, list(d[key].shape)) == (a["dtype"], a["shape"]), key
            assert sha256_array(d[key]) == a["sha256"], f"{info.path.name}: {key} differ"


def test_memory_loads_and_predicts_as_before(compat, record, arrays):
    exp = record["memory"]
    memory, info = load_memory(compat / "memory", device="cpu")
    assert memory.config.to_dict() == exp["config"]
    assert (info["env_id"], info["env_options"]) == (exp["env_id"], exp["env_options"])
    assert EnvSpec.from_record(info) == spec_of(exp)
    assert (info["vae_sha256"], info["action"]) == (exp["vae_sha256"], exp["action"])
    z, a = torch.from_numpy(arrays["m_z"]), torch.from_numpy(arrays["m_actions"])
    with torch.inference_mode():
        out, (h, c) = memory(z, a)
        out1, (h1, c1) = memory.step(z[:, 0], a[:, 0], None)
    for key in ("log_pi", "mu", "log_sigma", "reward", "done_logit", "hidden"):
        np.testing.assert_allclose(getattr(out, key).numpy(), arrays[f"m_{key}"], **TOL)
        np.testing.assert_allclose(getattr(out1, key).numpy(), arrays[f"m_{key}"][:, :1], **TOL)
    np.testing.assert_allclose(out.mean().numpy(), arrays["m_mean"], **TOL)
    np.testing.assert_allclose(h.numpy(), arrays["m_state_h"], **TOL)
    np.testing.assert_allclose(c.numpy(), arrays["m_state_c"], **TOL)
    np.testing.assert_allclose(h1.numpy(), arrays["m_step_state_h"], **TOL)
    np.testing.assert_allclose(c1.numpy(), arrays["m_step_state_c"], **TOL)


@pytest.mark.parametrize("name", AGENTS)
def test_agent_bundle_loads_and_acts_as_before(compat, record, arrays, name):
    exp = record["agents"][name]
    bundle = load_bundle(compat / name, device="cpu")  # also re-checks the recorded hashes
    cfg = bundle.config
    assert (cfg.algo, cfg.obs, cfg.dream) == (exp["algo"], exp["obs"], exp["dream"])
    assert (cfg.env_id, cfg.to_dict()["env_options"]) == (exp["env_id"], exp["env_options"])
    assert cfg.env == spec_of(exp)
    assert cfg.obs_options == exp["obs_options"]
    assert bundle.info.get("model_sha256") == exp["model_sha256"]
    assert bundle.info.get("memory_sha256") == exp["memory_sha256"]

    venv = bundle.make_env(1, 0)  # the env rebuilt from the recorded spec, with V (and M)
    try:
        assert list(venv.observation_space.shape) == exp["observation_shape"]
        assert int(venv.action_space.n) == exp["action_space_n"]
        # latents may be encoded in bf16 (CPUs with AMX) or fp32: bf16's tolerance
        np.testing.assert_allclose(venv.reset(), arrays[f"{name}_reset_obs"], rtol=0, atol=5e-3)
    finally:
        venv.close()

    obs = arrays[f"{name}_obs"]
    actions, _ = bundle.agent.predict(obs, deterministic=True)
    np.testing.assert_array_equal(np.asarray(actions), arrays[f"{name}_actions"])
    if exp["algo"] == "cmaes":
        return
    best = load_bundle(compat / name, device="cpu", which="best")
    for prefix, agent in ((name, bundle.agent), (f"{name}_best", best.agent)):
        actions, _ = agent.predict(obs, deterministic=True)
        np.testing.assert_array_equal(np.asarray(actions), arrays[f"{prefix}_actions"])
        with torch.inference_mode():  # SB3's policy API, not the project's
            t = agent.policy.obs_to_tensor(obs)[0]
            probs = agent.policy.get_distribution(t).distribution.probs.numpy()
            values = agent.policy.predict_values(t).numpy()
        np.testing.assert_allclose(probs, arrays[f"{prefix}_probs"], **TOL)
        np.testing.assert_allclose(values, arrays[f"{prefix}_values"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_cli_evaluates_an_old_bundle_in_the_env_it_records(compat, record, tmp_path):
    """``evaluate`` rebuilds the [z, h] agent's env (V, M, CartPole at 16x16, time limit 20)
    from the bundle alone and plays one episode."""
    limit = record["agents"]["agent_memory"]["env_options"]["max_episode_steps"]
    stdout = run_worldvae(
        "evaluate", compat / "agent_memory", "--episodes", "1", "--device", "cpu", cwd=tmp_path
    )
    match = re.search(r"return (-?[0-9.]+) \+- [0-9.]+ over 1 episodes", stdout)
    assert match, stdout
    assert 1.0 <= float(match.group(1)) <= limit  # CartPole pays 1 a step
