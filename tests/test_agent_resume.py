"""A killed train-agent continues from its last checkpoint to the same weights."""

import json
import os

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents import load_bundle, resolve_config, train_agent
from agents.agent_checkpoint import CHECKPOINT_DIR, checkpoint_step
from worldvae.rundir import ForeignDirError
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model

ALGOS = {
    "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 1},
    "recurrentppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 1},
    "dqn": {
        "learning_starts": 64,
        "buffer_size": 1000,
        "train_freq": 4,
        "batch_size": 16,
        "target_update_interval": 50,
    },
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vae") / "model"
    cfg = AutoencoderConfig(kind="vae", frame_shape=(32, 32, 3), latent_dim=4, channels=(4, 8))
    save_model(Autoencoder(cfg), path)
    return path


def _cfg(model_dir, algo="ppo", steps=384):
    return resolve_config(
        "CartPole-v1", "latent", algo, model_dir, steps, seed=3, overrides=ALGOS[algo],
        env_given={"frame_size": 32}, n_envs=1 if algo == "dqn" else 2, eval_freq=128,
        eval_episodes=1, checkpoint_freq=128,
    )  # fmt: skip


class StopAt(BaseCallback):
    """Ctrl-C once training passes ``steps``, as a person (or a kill) would."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.steps:
            raise KeyboardInterrupt
        return True


def _weights(bundle):
    return {
        k: v.clone() for k, v in load_bundle(bundle, device="cpu").agent.policy.state_dict().items()
    }


@pytest.mark.parametrize(
    "algo",
    [
        "ppo",
        pytest.param("dqn", marks=pytest.mark.slow),
        pytest.param("recurrentppo", marks=pytest.mark.slow),
    ],
)
def test_interrupted_agent_resumes_to_the_same_weights(algo, model_dir, tmp_path):
    cfg = _cfg(model_dir, algo)
    train_agent(cfg, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_agent(cfg, tmp_path / "cut", progress=False, callbacks=[StopAt(300)])
    info = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert info["status"] == "training"
    assert checkpoint_step(tmp_path / "cut") == 256  # the last boundary before the cut
    r = train_agent(cfg, tmp_path / "cut", progress=False)
    assert not r.skipped
    whole, cut = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert whole.keys() == cut.keys()
    for k in whole:
        torch.testing.assert_close(cut[k], whole[k], rtol=0, atol=0)
    rows = lambda d: [  # noqa: E731
        (r.split(",")[0], r.split(",")[3]) for r in (d / "eval.csv").read_text().splitlines()
    ]
    assert rows(tmp_path / "cut") == rows(tmp_path / "whole")
    assert not (tmp_path / "cut" / CHECKPOINT_DIR).exists()  # removed once complete


def test_interrupted_checkpoint_write_is_recovered(model_dir, tmp_path, caplog):
    cfg = _cfg(model_dir)
    out = tmp_path / "agent"
    with pytest.raises(KeyboardInterrupt):
        train_agent(cfg, out, progress=False, callbacks=[StopAt(300)])
    last = out / CHECKPOINT_DIR / "last"
    os.replace(last, last.with_name(".last.old"))  # killed between the two renames
    caplog.set_level("WARNING")
    train_agent(cfg, out, progress=False)
    assert "checkpoint write was interrupted" in caplog.text
    assert json.loads((out / "config.json").read_text())["status"] == "complete"


def test_train_agent_never_deletes_a_folder_it_did_not_write(model_dir, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    (out / "data").mkdir()
    for overwrite in (False, True):
        with pytest.raises(ForeignDirError, match="not a train-agent agent folder"):
            train_agent(_cfg(model_dir, steps=128), out, progress=False, overwrite=overwrite)
    assert (out / "todo.txt").read_text() == "keep me" and (out / "data").is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["data", "todo.txt"]


def test_overwrite_replaces_only_the_bundle(model_dir, tmp_path):
    out = tmp_path / "agent"
    cfg = _cfg(model_dir, steps=128)
    train_agent(cfg, out, progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        train_agent(cfg, out, progress=False)
    train_agent(cfg, out, progress=False, overwrite=True)
    assert np.isfinite(json.loads((out / "config.json").read_text())["final_mean_return"])


def test_a_run_cut_before_a_setting_existed_resumes_and_other_settings_are_refused(
    model_dir, tmp_path
):
    """An unfinished run whose record lacks settings added since (they take their defaults)
    resumes; one recorded with another value of a setting is refused."""
    cfg = _cfg(model_dir, steps=256)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_agent(cfg, out, progress=False, callbacks=[StopAt(150)])
    info = json.loads((out / "config.json").read_text())
    for added in ("dream_penalty", "dream_ensemble"):
        del info["agent"][added]
    (out / "config.json").write_text(json.dumps(info))
    other = json.loads(json.dumps(info))
    other["agent"]["seed"] = 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(other))
    assert not train_agent(cfg, out, progress=False).skipped
    assert json.loads((out / "config.json").read_text())["status"] == "complete"
    with pytest.raises(ValueError, match="unfinished agent run with other settings"):
        train_agent(cfg, tmp_path / "other", progress=False)
