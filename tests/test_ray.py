"""Collection and comparison runs as Ray tasks: the same files as local runs, and they resume."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from envs.cluster import check_cluster, connect_ray, run_tasks, uses_ray
from envs.collector import collect
from envs.factory import resolve_spec
from envs.policies import PolicySpec
from envs.ray_collect import play_on_ray
from worldvae.data.episodes import EPISODE_KEYS, has_states, read_episode
from worldvae.envspec import EnvSpec

ray = pytest.importorskip("ray")

CART = EnvSpec("CartPole-v1", frame_size=(16, 16))


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray of 2 CPUs for the module (start-up costs seconds)."""
    # Ray gives its raylet a fixed time to register; on a loaded machine that can run out,
    # so start it up to three times before failing.
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


def _episodes(root: Path) -> dict[str, dict[str, np.ndarray]]:
    return {
        p.name: read_episode(p, EPISODE_KEYS + (("states",) if has_states(p) else ()))
        for p in sorted((root / "episodes").glob("ep_*.npz"))
    }


def _assert_same(a: Path, b: Path) -> None:
    ea, eb = _episodes(a), _episodes(b)
    assert ea.keys() == eb.keys() and ea
    for name in ea:
        assert ea[name].keys() == eb[name].keys()
        for key in ea[name]:
            np.testing.assert_array_equal(ea[name][key], eb[name][key], err_msg=f"{name}:{key}")


def square(x: int) -> int:
    if x == 13:
        raise ValueError("thirteen")
    return x * x


def test_run_tasks_returns_every_result_and_stops_when_told():
    remote = ray.remote(num_cpus=1)(square)
    got: dict[int, int] = {}

    def keep(x: int, value: int) -> bool:
        got[x] = value
        return len(got) < 3 if stop_early else True

    stop_early = False
    run_tasks(ray, remote, iter(range(6)), lambda x: (x,), 2, keep)
    assert got == {x: x * x for x in range(6)}

    got.clear()
    stop_early = True
    run_tasks(ray, remote, iter(range(100)), lambda x: (x,), 2, keep)
    assert len(got) == 3  # nothing more handed out once the callback says stop

    with pytest.raises(RuntimeError, match=r"^item 13 failed on the Ray cluster: ValueError: "):
        run_tasks(ray, remote, iter([12, 13]), lambda x: (x,), 2, lambda x, v: True,
                  describe=lambda x: f"item {x}")  # fmt: skip


def test_ray_episodes_equal_local_collect(tmp_path):
    """Episodes played as Ray tasks are the files a local collect writes for the same seed."""
    local = collect(tmp_path / "local", CART, n_episodes=3, seed=5, progress=False)
    assert local.total_episodes == 3
    spec = resolve_spec(CART)
    assert spec.backend == "gymnasium"  # resolved, as the collector records it
    out = tmp_path / "ray"
    (out / "episodes").mkdir(parents=True)
    done: dict[int, int] = {}
    play_on_ray(
        "ray", spec, PolicySpec.parse("random"), 5, out, iter(range(3)),
        lambda i, n: done.setdefault(i, n) > 0, n_workers=2, record_state=True,
    )  # fmt: skip
    assert sorted(done) == [0, 1, 2]
    _assert_same(tmp_path / "local", tmp_path / "ray")
    assert "states" in _episodes(tmp_path / "ray")["ep_0000000.npz"]  # CartPole's true state
    assert sum(done.values()) == local.total_frames
    assert not list((out / "episodes").glob(".*"))  # no temporaries left


def test_collect_on_ray_writes_the_local_dataset_and_resumes(tmp_path):
    """`collect(cluster="ray")`: the same dataset as local for the same seed; a re-run after a
    lost episode plays only that one."""
    kw = {"n_frames": 120, "seed": 3, "progress": False}
    local = collect(tmp_path / "local", CART, **kw)
    on_ray = collect(tmp_path / "ray", CART, cluster="ray", n_workers=2, **kw)
    assert (on_ray.total_episodes, on_ray.total_frames) == (
        local.total_episodes,
        local.total_frames,
    )
    _assert_same(tmp_path / "local", tmp_path / "ray")
    (tmp_path / "ray" / "episodes" / "ep_0000001.npz").unlink()
    again = collect(tmp_path / "ray", CART, cluster="ray", n_workers=2, **kw)
    assert again.new_episodes == 1
    _assert_same(tmp_path / "local", tmp_path / "ray")


def test_connect_ray_uses_the_running_ray_and_refuses_local():
    assert connect_ray("ray") is ray
    with pytest.raises(ValueError, match="--cluster ray"):
        connect_ray("local")
    assert uses_ray("10.0.0.1:6379") and check_cluster("ray") == "ray"


def _compare_cfg(tmp_path: Path) -> Any:
    from agents.comparison import CompareConfig
    from worldvae.vae import Autoencoder, AutoencoderConfig, save_model

    if not (tmp_path / "vae").exists():
        torch.manual_seed(0)
        cfg = AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=4, channels=(8, 16))
        save_model(Autoencoder(cfg), tmp_path / "vae")
    cfg = CompareConfig(
        env_id="CartPole-v1",
        model_dir=str(tmp_path / "vae"),
        obs_kinds=("latent",),
        seeds=(0, 1),
        total_timesteps=64,
        eval_freq=64,
        eval_episodes=1,
        final_eval_episodes=1,
        env_given={"frame_size": 16, "max_episode_steps": 20},
        overrides={"n_steps": 32, "batch_size": 32, "n_epochs": 1},
        n_envs=2,
        probe=False,
    )
    return cfg


def _compare_runs(tmp_path: Path, out: Path) -> list:
    from agents.comparison import plan_runs

    return plan_runs(_compare_cfg(tmp_path), out)


def _weights(bundle: Path) -> dict[str, torch.Tensor]:
    """The policy's parameters, read from the SB3 zip without unpickling."""
    with zipfile.ZipFile(bundle / "agent.zip") as z, z.open("policy.pth") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


@pytest.mark.slow  # about 12 s: four tiny PPO runs
def test_ray_comparison_runs_equal_local_runs_and_resume(tmp_path):
    from agents.ray_runs import run_comparison_on_ray, train_bundle, train_runs_on_ray

    local = _compare_runs(tmp_path, tmp_path / "local")
    torch.set_num_threads(1)  # a Ray run with one CPU trains on one thread, as a local worker
    for run in local:
        train_bundle(run)
    on_ray = _compare_runs(tmp_path, tmp_path / "ray")
    assert sorted(train_runs_on_ray("ray", on_ray)) == [r.path for r in on_ray]
    for a, b in zip(local, on_ray, strict=True):
        wa, wb = _weights(a.path), _weights(b.path)
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)

    # A driver killed mid-comparison: one bundle complete, one not. The rerun trains only the
    # incomplete one.
    kept = on_ray[0].path / "agent.zip"
    stamp = kept.stat().st_mtime_ns
    info = json.loads((on_ray[1].path / "config.json").read_text())
    (on_ray[1].path / "config.json").write_text(json.dumps(info | {"status": "training"}))
    assert train_runs_on_ray("ray", on_ray) == [on_ray[1].path]
    assert kept.stat().st_mtime_ns == stamp
    assert train_runs_on_ray("ray", on_ray) == []  # all complete: Ray is not even asked

    # The whole comparison on Ray: the one cut run trains on the cluster (its time counted as
    # the training stage's), then the bundles are evaluated on the driver.
    info = json.loads((on_ray[1].path / "config.json").read_text())
    (on_ray[1].path / "config.json").write_text(json.dumps(info | {"status": "training"}))
    result = run_comparison_on_ray(_compare_cfg(tmp_path), tmp_path / "ray", progress=False)
    assert sorted(r["seed"] for r in result.runs) == [0, 1]
    assert kept.stat().st_mtime_ns == stamp
    saved = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert saved["timings"]["train"] == result.timings["train"] > 0


@pytest.mark.slow  # about a minute: a whole tiny pipeline
def test_pipeline_on_ray_collects_the_local_dataset(tmp_path):
    from agents.pipeline import run_pipeline

    settings = {"collect.n_frames": 150, "vae.epochs": 1, "compare.total_timesteps": 128}
    settings |= {"compare.eval_freq": 128, "compare.seeds": [0], "compare.obs_kinds": ["latent"]}
    settings |= {"compare.final_eval_episodes": 1}
    run_pipeline("smoke", out_dir=tmp_path / "pipe", settings=settings, cluster="ray",
                 progress=False)  # fmt: skip
    from worldvae.data import EpisodeDataset

    spec = EpisodeDataset(tmp_path / "pipe" / "data").manifest.env_spec
    assert spec.env_id == "MiniGrid-Empty-5x5-v0"
    collect(tmp_path / "local", spec, n_frames=150, progress=False)
    _assert_same(tmp_path / "local", tmp_path / "pipe" / "data")
