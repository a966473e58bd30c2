"""Run configs: valid ones parse, bad ones are refused with a message naming the problem."""

import pytest

from agents.base import AgentSpec
from harness.config import Budget, ConfigError, load_config, parse_config

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
    ({"budget": {"seconds": 60, "dolars": 5}}, "unknown key(s) in [budget]: budget.dolars"),
    ({"budget": {"dollars": 0}}, "budget.dollars must be a positive number"),
    ({"budget": {"tokens": 1e6}}, "budget.tokens must be a whole number"),
    ({"agents": ["noop", "noop"]}, "agent(s) noop listed more than once"),
    ({"agents": {"mine": {"kind": "gpt-17"}}}, "unknown agent(s) mine (kind gpt-17); known:"),
    ({"agents": {"slow": {"kind": "noop", "knows_budgt": False}}},
     "agent 'slow' (kind noop): unknown parameter(s) knows_budgt; its parameters: knows_budget"),
    ({"agents": {"p": {"kind": "gateway-probe", "model": "gpt-17"}}},
     "agent 'p': model 'gpt-17' has no price in"),
    ({"agents": {"p": {"kind": "gateway-probe", "api": "grpc"}}}, "api must be one of"),
    ({"agents": {"a b": {"kind": "noop"}}}, "agent row 'a b': its name must be"),
    ({"agents": {"noop": 1}}, "'agents' must be a non-empty list of agent kinds, or [agents.NAME] tables"),
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
    assert record["config"]["budget"] == {"seconds": 60, "experiments": 2, "dollars": None, "tokens": None}
    assert record["config"]["verify_seeds"] == [100, 101]
    assert record["config"]["profile"]["task"] == config.profile.task
    _claim_run_dir(config, tmp_path, "docker")   # resuming as it was run is fine
    with pytest.raises(ConfigError, match="docker runtime.*--runtime docker"):
        _claim_run_dir(config, tmp_path, "process")
    with pytest.raises(ConfigError, match="another config"):
        _claim_run_dir(parse_config(VALID | {"repeats": 3}), tmp_path, "docker")


def test_named_agent_rows_with_parameters_and_gateway_caps(tmp_path):
    """Two models under one adapter are two rows, named by their keys; a kind is its own row's name by default."""
    path = tmp_path / "run.toml"
    path.write_text('''run_id = "t2"
profile = "cpu-tiny"
[agents.noop]
[agents.probe-claude]
kind = "gateway-probe"
model = "claude-haiku-4-5"
[agents.probe-gpt]
kind = "gateway-probe"
model = "gpt-5-mini"
api = "responses"
[budget]
seconds = 60
experiments = 3
dollars = 2.5
tokens = 100_000
[seeds]
verify = [100]
''')
    config = load_config(path)
    assert config.agents == (AgentSpec("noop"),
                             AgentSpec("probe-claude", "gateway-probe", {"model": "claude-haiku-4-5"}),
                             AgentSpec("probe-gpt", "gateway-probe", {"model": "gpt-5-mini", "api": "responses"}))
    assert config.budget == Budget(seconds=60, experiments=3, dollars=2.5, tokens=100_000)
    assert parse_config(VALID).budget == Budget(seconds=60, experiments=2, dollars=None, tokens=None)



def test_the_overnight_config_pits_claude_against_gpt_within_a_printed_cost_ceiling():
    from pathlib import Path

    from agents.base import get_agent
    from harness.gateway.prices import price_of
    from harness.run import cost_ceiling, plan
    config = load_config(Path(__file__).parents[2] / "harness" / "configs" / "overnight.toml")
    kinds = {spec.name: spec.kind for spec in config.agents}
    assert kinds == {"claude-code": "claude-code", "codex": "codex", "mini-claude": "mini-swe-agent",
                     "mini-gpt": "mini-swe-agent", "noop": "noop", "random": "random"}
    models = {spec.name: get_agent(spec).model_id() for spec in config.agents}
    assert models["mini-claude"] == models["claude-code"] and models["mini-gpt"] == models["codex"]
    assert all(price_of(models[name]) for name in ("claude-code", "codex"))
    assert (config.profile.name, config.repeats, config.budget.seconds) == ("h100", 5, 8 * 3600)
    assert cost_ceiling(config, plan(config)).startswith(
        f"cost ceiling: ${20 * config.budget.dollars:,.2f} = 20 LLM sessions")


def test_five_held_out_seeds_by_default_and_a_warning_below():
    config = parse_config({k: v for k, v in VALID.items() if k != "seeds"})
    assert config.verify_seeds == (1000, 1001, 1002, 1003, 1004) and config.warnings() == []
    (three,) = parse_config(VALID | {"seeds": {"verify": [100, 101, 102]}}).warnings()
    assert "3 held-out seeds, fewer than the default 5" in three and "3.3 σ" in three and "1.7 σ with 5" in three
    assert "out of reach" in parse_config(VALID | {"seeds": {"verify": [100]}}).warnings()[0]
