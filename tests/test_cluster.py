"""``--cluster`` values, checked without Ray installed."""

from __future__ import annotations

import pytest

from agents.ray_runs import train_runs_on_ray
from envs.cluster import check_cluster, uses_ray


def test_cluster_values_are_checked():
    assert not uses_ray("local")
    assert uses_ray("ray") and uses_ray("10.0.0.1:6379") and uses_ray("ray://head:10001")
    for bad in ("", " ray", "ray\n"):
        with pytest.raises(ValueError, match="HOST:6379"):
            check_cluster(bad)


def test_ray_runs_refuse_bad_resources_before_connecting(tmp_path):
    with pytest.raises(ValueError, match="--cpus-per-run must be > 0"):
        train_runs_on_ray("ray", [], print, cpus_per_run=0)
    with pytest.raises(ValueError, match="--gpus-per-run >= 0"):
        train_runs_on_ray("ray", [], print, gpus_per_run=-1)


@pytest.mark.parametrize("command", ["compare", "pipeline"])
def test_cli_refuses_a_bad_cluster_before_anything_runs(command, tmp_path, capsys):
    from agents.cli.main import main

    args = [command, "--out", str(tmp_path / "out"), "--cluster", "ray ", "--seeds", "1"]
    if command == "compare":
        args += ["--env", "CartPole-v1", "--obs", "pixel"]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "worldvae: error: --cluster takes 'local', 'ray' or a Ray address" in err
    assert not (tmp_path / "out").exists()
