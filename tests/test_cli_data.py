import subprocess
import sys

import cv2
import pytest

from agents.cli.main import main


def test_collect_then_info_writes_mosaic(tmp_path, capsys):
    out = tmp_path / "ds"
    assert (
        main(
            [
                "collect",
                "--env",
                "CartPole-v1",
                "--frame-size",
                "16",
                "--episodes",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "episodes   3" in text and "CartPole-v1" in text
    mosaic = cv2.imread(str(out / "mosaic.png"))
    assert mosaic is not None and mosaic.shape[0] > 16
    assert main(["data", "verify", str(out)]) == 0


def test_bad_env_exits_non_zero_with_one_clear_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "worldvae", "collect", "--env", "CarRacin-v3", "--episodes", "1",
         "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "worldvae: error: unknown environment id 'CarRacin-v3'; did you mean 'CarRacing-v3'?"
    )
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_closed_pipe_stops_the_command_quietly(tmp_path):
    """``worldvae data info DIR | head -1``: no error line when the reader leaves early."""
    from tests.conftest import repo_pythonpath, write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "ds", n_episodes=3)
    code = (
        "import os, sys\n"
        "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"  # stdout: a pipe nobody reads
        "sys.stdout = open(1, 'w', buffering=1)\n"
        "from agents.cli.main import main\n"
        f"sys.exit(main(['data', 'info', {str(tmp_path / 'ds')!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": repo_pythonpath(), "SDL_VIDEODRIVER": "dummy"},
        timeout=300,
    )
    assert done.returncode == 141, done.stderr
    assert "error" not in done.stderr and "Traceback" not in done.stderr
