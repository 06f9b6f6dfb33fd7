import json

import cv2

from agents.pipeline import run_pipeline


def test_smoke_pipeline_produces_every_artifact_and_resumes(tmp_path):
    out = tmp_path / "smoke"
    report = run_pipeline("smoke", out, progress=False)
    files = {p.name for p in (out / "report").iterdir()}
    assert {
        "report.md",
        "curves.png",
        "results.csv",
        "results.json",
        "vae_reconstructions.png",
        "vae_traversals.png",
    } <= files
    assert cv2.imread(str(out / "report" / "curves.png")) is not None
    text = report.read_text()
    assert (
        "| pixel |" in text and "| latent |" in text and "worldvae pipeline --preset smoke" in text
    )
    results = json.loads((out / "report" / "results.json").read_text())
    assert len(results["runs"]) == 4 and set(results["summary"]) == {"pixel", "latent"}
    agent_zips = sorted((out / "compare" / "runs").glob("*/agent.zip"))
    stamps = [p.stat().st_mtime_ns for p in agent_zips]
    vae_stamp = (out / "vae" / "checkpoints" / "best" / "model.safetensors").stat().st_mtime_ns
    episodes = sorted(p.name for p in (out / "data" / "episodes").iterdir())

    run_pipeline("smoke", out, progress=False)  # everything is already there: nothing is redone
    assert [p.stat().st_mtime_ns for p in agent_zips] == stamps
    assert (
        out / "vae" / "checkpoints" / "best" / "model.safetensors"
    ).stat().st_mtime_ns == vae_stamp
    assert sorted(p.name for p in (out / "data" / "episodes").iterdir()) == episodes
    timings = json.loads((out / "report" / "timings.json").read_text())
    assert len(timings) == 2 and timings[1]["train_vae"] < 1.0
    assert "compare / train" in timings[0] and timings[1]["compare / train"] < 1.0
    # the report's stage times add the invocations: the first run's training is not lost
    text = report.read_text()
    assert "Summed over the 2 invocations" in text
    total = round(timings[0]["train_vae"] + timings[1]["train_vae"], 1)
    assert f"- train_vae: {total:,.0f} s" in text


def test_a_latent_h_arm_gets_its_memory_model_trained_by_the_pipeline(tmp_path):
    out = tmp_path / "world"
    settings = {"obs_kinds": ("latent", "latent+h"), "seeds": (0,), "memory_epochs": 1}
    settings |= {"memory_model": {"hidden_size": 16, "n_gaussians": 2}, "memory_seq_len": 8}
    report = run_pipeline("smoke", out, settings=settings, progress=False)
    assert (out / "rnn" / "checkpoints" / "best" / "model.safetensors").is_file()
    assert sorted((out / "latents" / "episodes").iterdir())
    results = json.loads((out / "report" / "results.json").read_text())
    assert set(results["summary"]) == {"latent", "latent+h"}
    info = json.loads(next((out / "compare" / "runs").glob("*latent+h*/config.json")).read_text())
    assert info["memory_sha256"]
    assert "| latent+h |" in report.read_text()
    m_stamp = (out / "rnn" / "checkpoints" / "best" / "model.safetensors").stat().st_mtime_ns
    run_pipeline("smoke", out, settings=settings, progress=False)  # M is not trained again
    assert (
        out / "rnn" / "checkpoints" / "best" / "model.safetensors"
    ).stat().st_mtime_ns == m_stamp
