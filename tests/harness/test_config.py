"""Run configs: valid ones parse, bad ones are refused with a message naming the problem."""

import pytest

from harness.config import ConfigError, load_config, parse_config

VALID = {"run_id": "t1", "profile": "cpu-tiny", "agents": ["noop"], "repeats": 2,
         "budget": {"seconds": 60, "experiments": 2}, "seeds": {"session": 0, "verify": [100, 101]}}


def test_valid_config_parses_with_session_seeds_disjoint_from_verify_seeds():
    config = parse_config(VALID)
    assert config.session_seeds() == [0, 1]
    assert config.verify_seeds == (100, 101)
    assert config.profile.name == "cpu-tiny"
    assert config.verify_splits == ("val", "test")
    assert config.gpus == () and parse_config(VALID | {"gpus": "0, 1"}).gpus == (0, 1)


@pytest.mark.parametrize("change, message", [
    ({"agents": ["nobody"]}, "unknown agent(s) nobody; known:"),
    ({"profile": "tpu-huge"}, "unknown profile 'tpu-huge'"),
    ({"repeats": 0}, "repeats must be a positive number"),
    ({"budget": {"seconds": -5}}, "budget.seconds must be a positive number"),
    ({"seeds": {"session": 0, "verify": [1, 5]}}, "held-out seeds [1] are also session seeds"),
    ({"seeds": {"verify": []}}, "at least one held-out seed"),
    ({"verify": {"splits": ["train"]}}, "unknown split(s) ['train']"),
    ({"run_id": "a b"}, "run_id must be"),
    ({"agent": ["noop"]}, "unknown key(s) agent"),
    ({"agents": []}, "non-empty list"),
    ({"gpus": "0,x"}, "gpus must be GPU indices like 0,1"),
    ({"gpus": [1, 1]}, "gpus must be distinct non-negative indices"),
    ({"budget": {"seconds": 60, "experiment": 2}}, "unknown key(s) in [budget]: budget.experiment"),
    ({"seeds": {"verify": [100], "sesion": 3}}, "unknown key(s) in [seeds]: seeds.sesion"),
    ({"verify": {"split": ["val"]}}, "unknown key(s) in [verify]: verify.split"),
    ({"budget": 60}, "[budget] must be a table"),
])
def test_bad_config_is_refused_with_a_clear_message(change, message):
    with pytest.raises(ConfigError) as err:
        parse_config(VALID | change)
    assert message in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("run_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_run_dir_keeps_the_config_as_run_and_refuses_another_runtime(tmp_path):
    """run.json holds the config as it was run (profile spelled out), and pins the runtime: one run folder never
    mixes containerized and process sessions."""
    from harness.run import _claim_run_dir
    from harness.store import read_json

    config = parse_config(VALID)
    _claim_run_dir(config, tmp_path, "docker")
    record = read_json(tmp_path / "run.json")
    assert record["runtime"] == "docker"
    assert record["config"]["budget"] == {"seconds": 60, "experiments": 2}
    assert record["config"]["verify_seeds"] == [100, 101]
    assert record["config"]["profile"]["task"] == config.profile.task
    _claim_run_dir(config, tmp_path, "docker")   # resuming as it was run is fine
    with pytest.raises(ConfigError, match="docker runtime.*--runtime docker"):
        _claim_run_dir(config, tmp_path, "process")
    with pytest.raises(ConfigError, match="another config"):
        _claim_run_dir(parse_config(VALID | {"repeats": 3}), tmp_path, "docker")
