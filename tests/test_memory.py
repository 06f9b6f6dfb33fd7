import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.latent_fixtures import synthetic_step, write_synthetic_latents
from worldvae.checkpoints import NonFiniteLossError
from worldvae.data.latents import LatentDataset, SequenceStream
from worldvae.memory import MDNRNN, MemoryConfig, load_memory, mdn_nll, sample_next
from worldvae.memory.diagnostics import dream_rollout
from worldvae.memory.trainer import MemoryTrainConfig, MemoryTrainer, train_memory

TINY = {"hidden_size": 32, "n_gaussians": 2}


def _cfg(**kw):
    base = {"model": TINY, "epochs": 2, "batch_size": 8, "seq_len": 8, "log_every": 2}
    return MemoryTrainConfig(**(base | kw))


def _normal_logpdf(x, m, s):
    return -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def test_mdn_nll_matches_closed_form_mixture():
    # two dims, two components each: NLL = -sum_d log sum_k pi_dk N(x_d; mu_dk, sigma_dk)
    x = torch.tensor([[0.3, -1.2]])
    pi = torch.tensor([[[0.25, 0.75], [0.6, 0.4]]])
    mu = torch.tensor([[[0.0, 1.0], [-1.0, 2.0]]])
    sigma = torch.tensor([[[0.5, 2.0], [1.0, 0.3]]])
    got = mdn_nll(x, pi.log(), mu, sigma.log())
    expected = 0.0
    for d in range(2):
        p = sum(
            float(pi[0, d, k])
            * math.exp(_normal_logpdf(float(x[0, d]), float(mu[0, d, k]), float(sigma[0, d, k])))
            for k in range(2)
        )
        expected -= math.log(p)
    assert got.shape == (1,)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_mdn_nll_with_one_component_is_the_gaussian_nll():
    torch.manual_seed(0)
    x, mu, log_sigma = torch.randn(4, 5), torch.randn(4, 5, 1), torch.randn(4, 5, 1) * 0.3
    got = mdn_nll(x, torch.zeros(4, 5, 1), mu, log_sigma)
    normal = torch.distributions.Normal(mu[..., 0], log_sigma[..., 0].exp())
    torch.testing.assert_close(got, -normal.log_prob(x).sum(-1))


def test_sampling_temperature_controls_the_spread():
    m = MDNRNN(MemoryConfig(latent_dim=3, action_dim=2, hidden_size=8, n_gaussians=3))
    out, _ = m.step(torch.zeros(1, 3), torch.zeros(1, 2), None)
    gen = torch.Generator().manual_seed(0)
    cold = torch.stack([sample_next(out, 1e-4, gen)[0] for _ in range(50)])
    best = out.log_pi[0, -1].argmax(-1)
    np.testing.assert_allclose(
        cold.mean(0), out.mu[0, -1].gather(-1, best[:, None])[:, 0], atol=0.05
    )
    hot = torch.stack([sample_next(out, 2.0, gen)[0] for _ in range(50)])
    assert hot.std(0).mean() > 10 * cold.std(0).mean()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_next(out, 0.0)


def test_sampling_draws_each_component_by_its_weight_and_never_one_of_zero_weight():
    from worldvae.memory.model import MDNOutput, mixture_noise

    # one row, 2 dimensions, 3 components; the last weighs nothing (an ensemble's padding)
    log_pi = torch.log(torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.5, 0.0]])).view(1, 1, 2, 3)
    mu = torch.tensor([[0.0, 10.0, 99.0], [-10.0, 10.0, 99.0]]).view(1, 1, 2, 3)
    out = MDNOutput(log_pi, mu, torch.full_like(mu, -30.0), torch.zeros(1, 1),
                    torch.zeros(1, 1), torch.zeros(1, 1, 4))  # fmt: skip
    eps = torch.zeros(1, 2)
    for u, want in (((0.1, 0.1), (0.0, -10.0)), ((0.3, 0.6), (10.0, 10.0))):
        got = sample_next(out, 1.0, noise=(torch.tensor([u]), eps))
        np.testing.assert_allclose(got[0], want, atol=1e-6)
    top = torch.nextafter(torch.ones(1, 2), torch.zeros(1, 2))  # the largest uniform below 1
    np.testing.assert_allclose(sample_next(out, 1.0, noise=(top, eps))[0], (10.0, 10.0), atol=1e-6)
    # drawn from a generator: components in proportion to their weights
    gen = torch.Generator().manual_seed(0)
    wide = MDNOutput(log_pi.expand(4000, 1, 2, 3), mu.expand(4000, 1, 2, 3),
                     torch.full((4000, 1, 2, 3), -30.0), torch.zeros(4000, 1),
                     torch.zeros(4000, 1), torch.zeros(4000, 1, 4))  # fmt: skip
    z = sample_next(wide, 1.0, gen)
    assert (z[:, 0] > 5).float().mean().item() == pytest.approx(0.75, abs=0.03)
    assert (z < 50).all()  # the weightless component (mean 99) never
    u, e = mixture_noise(3, 2, torch.Generator().manual_seed(1))
    assert u.shape == e.shape == (3, 2) and ((u >= 0) & (u < 1)).all()


def test_model_rejects_inputs_of_the_wrong_width():
    m = MDNRNN(MemoryConfig(latent_dim=3, action_dim=2, hidden_size=8))
    with pytest.raises(ValueError, match=r"latents \(B, L, 3\) and actions \(B, L, 2\)"):
        m(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3))


def _dream_error(model, seed=5):
    rng = np.random.default_rng(seed)
    z0 = rng.uniform(-1, 1, 3).astype(np.float32)
    actions = rng.integers(0, 2, 8)
    real = [z0]
    for a in actions:
        real.append(synthetic_step(real[-1], int(a)))
    real_next = np.stack(real[1:])
    one_hot = np.eye(2, dtype=np.float32)[actions]
    dreamed, rewards, _ = dream_rollout(model, z0, one_hot, temperature=0.01, seed=0)
    return np.abs(dreamed - real_next).mean(), np.abs(real_next).mean(), rewards, real_next


def test_tiny_m_fits_a_synthetic_sequence_and_dreams_close_to_it(tmp_path):
    data = write_synthetic_latents(tmp_path / "lat", n_episodes=16, length=24)
    ds = LatentDataset(data, val_fraction=0.0)
    batch = next(iter(SequenceStream(ds, ds.episodes, seq_len=24, batch_size=16, shuffle=False)))
    t = {k: torch.from_numpy(v) for k, v in batch.items()}
    torch.manual_seed(0)
    model = MDNRNN(MemoryConfig(latent_dim=3, action_dim=2, hidden_size=32, n_gaussians=2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        loss, metrics = model.loss(t["mu"], t["actions"], t["rewards"], t["dones"], t["mask"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(metrics["nll"]))
    assert losses[-1] < losses[0] - 4.0, (losses[0], losses[-1])
    err, scale, rewards, real_next = _dream_error(model.eval())
    assert err < 0.25 * scale, (err, scale)  # open loop over 8 steps, at tau = 0.01
    np.testing.assert_allclose(rewards, real_next[:, 0], atol=0.3)


@pytest.mark.slow
def test_trainer_fits_a_synthetic_sequence(tmp_path):
    data = write_synthetic_latents(tmp_path / "lat", n_episodes=24, length=24)
    result = train_memory(
        data,
        tmp_path / "run",
        _cfg(epochs=30, lr=1e-2, patience=30, sample_latents=False),
        progress=False,
    )
    history = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    first, last = (float(history[i].split(",")[2]) for i in (1, -1))
    assert last < first - 2.0, (first, last)
    model, info = load_memory(tmp_path / "run", device="cpu")
    assert info["env_id"] == "Synthetic-v0" and result.epochs_done == 30
    err, scale, rewards, real_next = _dream_error(model)
    assert err < 0.2 * scale, (err, scale)
    np.testing.assert_allclose(rewards, real_next[:, 0], atol=0.3)


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    data = write_synthetic_latents(tmp_path / "lat", n_episodes=12, length=20)
    train_memory(data, tmp_path / "whole", _cfg(epochs=3), progress=False)
    state = json.loads(
        (tmp_path / "whole" / "checkpoints" / "last" / "trainer_state.json").read_text()
    )
    per_epoch = state["step"] // 3
    train_memory(data, tmp_path / "cut", _cfg(epochs=3, max_steps=per_epoch + 2), progress=False)
    cut_state = json.loads(
        (tmp_path / "cut" / "checkpoints" / "last" / "trainer_state.json").read_text()
    )
    assert cut_state["batch_in_epoch"] == 2 and cut_state["epoch"] == 1
    train_memory(data, tmp_path / "cut", _cfg(epochs=3), resume=True, progress=False)
    whole = load_file(str(tmp_path / "whole" / "checkpoints" / "last" / "model.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "checkpoints" / "last" / "model.safetensors"))
    assert whole.keys() == cut.keys()
    for k in whole:
        torch.testing.assert_close(whole[k], cut[k], rtol=0, atol=0, msg=k)
    assert (tmp_path / "whole" / "tb").is_dir()


def test_existing_run_is_refused_and_nan_stops_keeping_the_last_checkpoint(tmp_path):
    data = write_synthetic_latents(tmp_path / "lat", n_episodes=6, length=10)
    run = tmp_path / "run"
    train_memory(data, run, _cfg(epochs=1), progress=False)
    with pytest.raises(FileExistsError, match="already exists; pass --resume"):
        train_memory(data, run, _cfg(epochs=1), progress=False)
    with pytest.raises(ValueError, match="started with another configuration"):
        train_memory(data, run, _cfg(epochs=1, lr=0.5), resume=True, progress=False)
    good = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    trainer = MemoryTrainer(data, run, _cfg(epochs=2), resume=True)
    with torch.no_grad():
        trainer.model.mdn.weight.fill_(float("nan"))
    with pytest.raises(
        NonFiniteLossError, match=r"loss became nan at step \d+.*last good checkpoint"
    ):
        trainer.fit(progress=False)
    after = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    for k in good:
        torch.testing.assert_close(good[k], after[k], rtol=0, atol=0)


def test_reward_calibration_sums_m_rewards_step_by_step_over_real_episodes(tmp_path, capsys):
    import sys
    from pathlib import Path

    from worldvae.memory.diagnostics import reward_calibration

    write_synthetic_latents(tmp_path / "lat", n_episodes=4, length=10)
    ds = LatentDataset(tmp_path / "lat")
    train_memory(tmp_path / "lat", tmp_path / "m", _cfg(epochs=1), progress=False)
    m, _ = load_memory(tmp_path / "m", device="cpu")
    cal = reward_calibration(m, ds, ds.episodes)
    assert cal.real.shape == cal.predicted.shape == (4,) and cal.steps == 40
    abs_err = 0.0
    for i, info in enumerate(ds.episodes):
        ep = ds.load(info)
        state, summed = None, 0.0
        with torch.no_grad():  # one step at a time, M's state carried: the real env's way
            for t in range(len(ep["actions"])):
                z = torch.as_tensor(ep["mu"][t], dtype=torch.float32)[None, None]
                a = torch.as_tensor(ep["actions"][t], dtype=torch.float32)[None, None]
                out, state = m(z, a, state)
                summed += float(out.reward[0, 0])
                abs_err += abs(float(out.reward[0, 0]) - float(ep["rewards"][t]))
        assert cal.real[i] == pytest.approx(float(ep["rewards"].astype(np.float64).sum()))
        assert cal.predicted[i] == pytest.approx(summed, abs=1e-4)
    assert cal.step_mae == pytest.approx(abs_err / 40, abs=1e-5)
    s = cal.summary()
    assert s["episodes"] == 4 and s["ratio"] == pytest.approx(
        cal.predicted.mean() / cal.real.mean()
    )
    assert -1.0 <= s["correlation"] <= 1.0
    with pytest.raises(ValueError, match="no episode"):
        reward_calibration(m, ds, [])
    blind = MDNRNN(MemoryConfig(latent_dim=3, action_dim=2, predict_reward=False, **TINY))
    with pytest.raises(ValueError, match="without rewards"):
        reward_calibration(blind, ds, ds.episodes)
    wider = MDNRNN(MemoryConfig(latent_dim=4, action_dim=2, **TINY))
    with pytest.raises(ValueError, match=r"latents of 4 .* the dataset holds 3"):
        reward_calibration(wider, ds, ds.episodes)

    # the script: one row per M and group of episodes, the same numbers
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        from m_reward_calibration import main
    finally:
        sys.path.pop(0)
    argv = [str(tmp_path / "lat"), "--memory", f"M1={tmp_path / 'm'}", "--group", "a=0-1"]
    assert main([*argv, "--group", "b=2-3"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| M1 |")]
    first = reward_calibration(m, ds, ds.episodes[:2]).summary()
    assert len(rows) == 2 and rows[0].startswith(f"| M1 | a | 2 | {first['real_return']:.1f} |")
    assert main([*argv, "--group", "c=7-9"]) == 1
    assert "no all episode in c=7-9" in capsys.readouterr().err


def test_teacher_forced_disagreement_reads_every_step_of_real_episodes(tmp_path, capsys):
    import sys
    from pathlib import Path

    from worldvae.memory.diagnostics import teacher_forced_disagreement
    from worldvae.memory.model import disagreement

    write_synthetic_latents(tmp_path / "lat", n_episodes=3, length=8)
    ds = LatentDataset(tmp_path / "lat")
    for seed in (0, 1):
        cfg = _cfg(epochs=1, seed=seed)
        train_memory(tmp_path / "lat", tmp_path / f"m{seed}", cfg, progress=False)
    ms = [load_memory(tmp_path / f"m{seed}", device="cpu")[0] for seed in (0, 1)]
    spread = teacher_forced_disagreement(ms, ds, ds.episodes)
    assert spread.shape == (24,) and (spread > 0).all()  # two Ms of other seeds part a little
    ep = ds.load(ds.episodes[1])
    z = torch.as_tensor(ep["mu"][:-1], dtype=torch.float32)[None]
    a = torch.as_tensor(ep["actions"], dtype=torch.float32)[None]
    with torch.no_grad():
        means = [m(z, a)[0].mean()[0].numpy() for m in ms]
        want = disagreement([m(z, a)[0] for m in ms])[0].numpy()
    np.testing.assert_allclose(spread[8:16], want, rtol=1e-5)
    np.testing.assert_allclose(
        want, np.linalg.norm(np.abs(means[0] - means[1]) / 2, axis=-1), rtol=1e-5
    )
    assert teacher_forced_disagreement([ms[0], ms[0]], ds, ds.episodes).max() == 0.0
    with pytest.raises(ValueError, match="two Ms or more"):
        teacher_forced_disagreement(ms[:1], ds, ds.episodes)
    with pytest.raises(ValueError, match="no episode"):
        teacher_forced_disagreement(ms, ds, [])
    wider = MDNRNN(MemoryConfig(latent_dim=4, action_dim=2, **TINY))
    with pytest.raises(ValueError, match=r"latents of 4 .* the dataset holds 3"):
        teacher_forced_disagreement([ms[0], wider], ds, ds.episodes)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        from m_disagreement import main
    finally:
        sys.path.pop(0)
    argv = [
        str(tmp_path / "lat"),
        "--memory",
        str(tmp_path / "m0"),
        "--memory",
        str(tmp_path / "m1"),
    ]
    assert main([*argv, "--group", "a=0-0", "--group", "b=1-2"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith(("| a |", "| b |"))]
    assert len(rows) == 2 and rows[1].startswith(f"| b | 2 | 16 | {spread[8:].mean():.3f} |")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "lat"), "--memory", str(tmp_path / "m0")])
