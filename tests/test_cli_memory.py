from agents.cli.main import main
from tests.latent_fixtures import write_synthetic_latents


def test_encode_data_names_a_missing_dataset(tmp_path, capsys):
    code = main(
        [
            "encode-data",
            "--data",
            str(tmp_path / "nope"),
            "--model",
            str(tmp_path),
            "--out",
            str(tmp_path / "lat"),
        ]
    )
    assert code == 1
    assert "is not a worldvae dataset" in capsys.readouterr().err
    assert not (tmp_path / "lat").exists()


def test_train_rnn_runs_and_refuses_to_overwrite(tmp_path, capsys):
    data = write_synthetic_latents(tmp_path / "lat", n_episodes=6, length=10)
    args = ["train-rnn", "--data", str(data), "--out", str(tmp_path / "rnn"), "--epochs", "1"]
    args += ["--hidden-size", "8", "--n-gaussians", "2", "--batch-size", "4", "--seq-len", "8"]
    assert main(args) == 0
    assert "trained M: 1 epochs" in capsys.readouterr().out
    assert (tmp_path / "rnn" / "checkpoints" / "best" / "model.safetensors").is_file()
    assert main(args) == 1
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert main(["train-rnn", "--data", str(tmp_path), "--out", str(tmp_path / "x")]) == 1
    assert "is not a latent dataset" in capsys.readouterr().err
