"""One env spec from collection to every agent: the VAE and all arms see the same frames."""

import dataclasses

import pytest

from agents import resolve_config
from agents.comparison import CompareConfig
from agents.control_arms import random_encoder_dir
from envs import collect
from worldvae.envspec import EnvSpec, read_env_spec
from worldvae.vae.trainer import TrainConfig, train_autoencoder

CROP = (4, 2, 0, 0)


# The spec itself: plain, normalised, checked data.


def test_an_int_frame_size_means_a_square_frame():
    spec = EnvSpec("CartPole-v1", frame_size=16, crop=[4, 2, 0, 0])
    assert spec.frame_size == (16, 16) and spec.crop == CROP
    assert spec == EnvSpec("CartPole-v1", frame_size=(16, 16), crop=CROP)
    assert spec.frame_shape == (16, 16, 3) and spec.channels == 3
    assert EnvSpec("CartPole-v1", frame_size=[24, 32], grayscale=True).frame_shape == (24, 32, 1)


def test_a_spec_is_frozen_and_hashable():
    spec = EnvSpec("CartPole-v1", env_kwargs={"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.frame_skip = 2  # type: ignore[misc]
    assert len({spec, EnvSpec("CartPole-v1", env_kwargs={"a": 1})}) == 1


def test_a_record_without_a_backend_was_made_by_gymnasium():
    old = {"env_id": "CartPole-v1", "env_options": {"frame_size": [16, 16], "crop": None}}
    spec = EnvSpec.from_dict(old)
    assert spec.backend == "gymnasium" and spec.frame_size == (16, 16)
    assert spec.frame_skip == 1 and spec.max_episode_steps is None  # the defaults
    # a record without options is the env's default spec, as gymnasium made it
    assert EnvSpec.from_dict({"env_id": "x"}) == EnvSpec("x", backend="gymnasium")
    # but it holds no spec where a spec may be absent
    assert EnvSpec.from_record({"env_id": "x"}) is None
    assert EnvSpec.from_record({}) is None
    with pytest.raises(ValueError, match="no env_id"):
        EnvSpec.from_dict({"env_options": {}})


def test_to_dict_and_from_dict_round_trip():
    spec = EnvSpec(
        "CarRacing-v3",
        frame_size=(48, 40),
        crop=(0, 12, 0, 0),
        grayscale=True,
        frame_skip=2,
        max_episode_steps=300,
        env_kwargs={"domain_randomize": True},
        backend="gymnasium",
    )
    record = spec.to_dict()
    assert record == {"env_id": "CarRacing-v3", "env_options": spec.options()}
    assert record["env_options"]["frame_size"] == [48, 40]  # JSON-ready: lists, not tuples
    assert record["env_options"]["crop"] == [0, 12, 0, 0]
    assert EnvSpec.from_dict(record) == spec
    # the auto backend survives the trip too (it is only a record's absence that means gymnasium)
    assert EnvSpec.from_dict(EnvSpec("CartPole-v1").to_dict()).backend == "auto"


def test_an_unknown_option_key_is_refused():
    with pytest.raises(
        ValueError, match=r"unknown env options \['framesize'\]; known: .*frame_size"
    ):
        EnvSpec.from_dict({"env_id": "CartPole-v1", "env_options": {"framesize": 16}})
    with pytest.raises(ValueError, match=r"unknown env spec fields \['bogus'\]"):
        EnvSpec("CartPole-v1").replace(bogus=1)
    with pytest.raises(TypeError):
        EnvSpec("CartPole-v1", bogus=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frame_skip": 0}, "frame_skip must be >= 1, got 0"),
        ({"frame_skip": 10**6}, "frame_skip must be <= 1000, got 1000000"),
        ({"frame_size": 4}, r"frame_size must be >= 8, got \(4, 4\)"),
        ({"max_episode_steps": 0}, "max_episode_steps must be >= 1, got 0"),
        ({"crop": (0, -1, 0, 0)}, "crop must be >= 0"),
    ],
)
def test_an_out_of_range_option_is_refused_clearly(fields, message):
    with pytest.raises(ValueError, match=f"EnvSpec: {message}"):
        EnvSpec("CartPole-v1", **fields)
    with pytest.raises(ValueError, match=message):
        EnvSpec.from_dict({"env_id": "CartPole-v1", "env_options": fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frame_size": (1, 2, 3)}, "frame_size must be an int or"),
        ({"frame_size": True}, "frame_size must be an int or"),
        ({"crop": (1, 2)}, r"crop must be \(top, bottom, left, right\)"),
        ({"env_kwargs": [1]}, "env_kwargs must be a mapping"),
    ],
)
def test_a_malformed_option_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        EnvSpec("CartPole-v1", **fields)
    with pytest.raises(ValueError, match="env_id must be a non-empty string"):
        EnvSpec("")


def test_conflicts_name_both_values_and_skip_free_fields():
    spec = EnvSpec("CartPole-v1", frame_size=16, crop=CROP, backend="gymnasium")
    assert spec.conflicts({"crop": (0, 12, 0, 0), "frame_size": 32}) == [
        "crop: recorded [4, 2, 0, 0], given [0, 12, 0, 0]",
        "frame_size: recorded [16, 16], given [32, 32]",
    ]
    # agreeing values (in any spelling), None, and the free fields do not conflict
    given = {"frame_size": 16, "crop": [4, 2, 0, 0], "grayscale": None}
    assert spec.conflicts(given | {"max_episode_steps": 5, "backend": "envpool"}) == []
    assert spec.conflicts(None) == []


def test_resolve_applies_the_free_fields_and_names_where_the_spec_is_recorded():
    spec = EnvSpec("CartPole-v1", frame_size=16, crop=CROP, backend="gymnasium")
    resolved = spec.resolve({"crop": CROP, "max_episode_steps": 1000}, "the model m")
    assert isinstance(resolved, EnvSpec)
    assert resolved == spec.replace(max_episode_steps=1000)
    with pytest.raises(ValueError, match=r"recorded in the model m .*grayscale: recorded false"):
        spec.resolve({"grayscale": True}, "the model m")


def test_replace_ignores_none_and_returns_a_copy():
    spec = EnvSpec("CartPole-v1", frame_size=16, frame_skip=2)
    same = spec.replace(frame_size=None, frame_skip=None, crop=None)
    assert same == spec
    changed = spec.replace(frame_size=32, grayscale=True)
    assert changed.frame_size == (32, 32) and changed.grayscale
    assert spec.frame_size == (16, 16) and not spec.grayscale  # the original is unchanged
    with pytest.raises(ValueError, match="frame_skip must be >= 1"):
        spec.replace(frame_skip=0)


# The spec from a collection through the model to every agent.


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A tiny VAE trained on cropped 16x16 CartPole frames: (dataset, run directory)."""
    root = tmp_path_factory.mktemp("spec")
    spec = EnvSpec("CartPole-v1", frame_size=16, crop=CROP, backend="gymnasium")
    collect(root / "data", spec, n_episodes=4, progress=False)
    cfg = TrainConfig(
        model={"kind": "vae", "latent_dim": 4, "channels": (8, 16)},
        epochs=1,
        batch_size=16,
        device="cpu",
    )
    train_autoencoder(root / "data", root / "vae", cfg, progress=False)
    return root / "data", root / "vae"


def test_the_model_records_the_dataset_spec(vae_run):
    spec = read_env_spec(vae_run[1])
    assert spec is not None and spec.env_id == "CartPole-v1"
    assert spec.crop == CROP and spec.frame_size == (16, 16) and spec.backend == "gymnasium"


@pytest.mark.parametrize("obs", ["latent", "encoder"])
def test_agents_on_the_model_take_its_spec(vae_run, obs):
    cfg = resolve_config("CartPole-v1", obs, model_dir=str(vae_run[1]))
    assert cfg.env.crop == CROP and cfg.env.frame_size == (16, 16)
    assert cfg.env == read_env_spec(vae_run[1])


def test_every_arm_of_a_comparison_sees_the_vae_frames(vae_run, tmp_path):
    cmp = CompareConfig(env_id="CartPole-v1", model_dir=str(vae_run[1]))
    pixel = cmp.agent_config("pixel", seed=0)  # no model of its own: the VAE's spec all the same
    latent = cmp.agent_config("latent", seed=0)
    rand = cmp.agent_config("random", 0, str(random_encoder_dir(vae_run[1], tmp_path, 0)))
    for cfg in (pixel, latent, rand):
        assert cfg.env.crop == CROP and cfg.env.frame_size == (16, 16)


def test_a_given_option_that_contradicts_the_spec_names_both_values(vae_run):
    with pytest.raises(ValueError, match=r"crop: recorded \[4, 2, 0, 0\], given \[0, 12, 0, 0\]"):
        resolve_config(
            "CartPole-v1", "latent", model_dir=str(vae_run[1]), env_given={"crop": (0, 12, 0, 0)}
        )
    with pytest.raises(ValueError, match="frame_size: recorded"):
        CompareConfig(
            env_id="CartPole-v1", model_dir=str(vae_run[1]), env_given={"frame_size": [32, 32]}
        ).agent_config("pixel", 0)
    # agreeing and free options pass: a longer time limit does not change a frame
    cfg = resolve_config(
        "CartPole-v1",
        "latent",
        model_dir=str(vae_run[1]),
        env_given={"crop": CROP, "max_episode_steps": 1000},
    )
    assert cfg.env.max_episode_steps == 1000


def test_without_a_recorded_spec_the_env_recommended_options_apply():
    cfg = resolve_config("CarRacing-v3", "pixel", env_given={"backend": "gymnasium"})
    assert cfg.env.crop == (0, 12, 0, 0) and cfg.env.frame_skip == 2
    assert cfg.env.backend == "gymnasium"
    plain = resolve_config("CartPole-v1", "pixel").env
    assert plain.crop is None and plain.backend != "auto"  # the backend is resolved
