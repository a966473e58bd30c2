"""The agent registry (agents/base.py): every kind a lookup, every adapter an Agent, parameters checked against the
adapter's fields."""

from __future__ import annotations

import importlib

import pytest

from agents.base import AGENTS, GATEWAY_FILES, Agent, AgentSpec, GatewayAgent, Start, UnknownAgent, get_agent
from agents.controls import CONTROLS

START = Start(seed=7, max_experiments=3, gateway_url="http://127.0.0.1:8765/", token="tok-session")


def test_every_kind_is_an_agent_and_every_control_is_registered():
    assert set(CONTROLS) < set(AGENTS) and "gateway-probe" in AGENTS
    for kind, path in AGENTS.items():
        module, name = path.split(":")
        assert issubclass(getattr(importlib.import_module(module), name), Agent), kind


def test_a_control_gets_no_environment_and_is_told_the_cap_only_when_it_knows_it():
    noop = get_agent(AgentSpec("noop"))
    assert (noop.name, noop.kind, noop.uses_gateway, noop.image_needs) == ("noop", "noop", False, ())
    assert noop.command(START) == ["python", "-m", "agents.controls", "noop", "--seed", "7", "--max-experiments", "3"]
    assert noop.env(START) == {} and noop.model_id() is None
    forever = get_agent(AgentSpec("noop-forever", "noop", {"knows_budget": False}))
    assert forever.command(START) == ["python", "-m", "agents.controls", "noop", "--seed", "7"]
    assert forever.describe() == {"agent": "noop-forever", "kind": "noop", "model": "none",
                                  "parameters": {"knows_budget": False}, "image_needs": [], "leaves": ["agent.log"]}


def test_a_gateway_agent_gets_the_gateway_and_its_token_and_leaves_the_gateway_files():
    probe = get_agent(AgentSpec("probe-gpt", "gateway-probe", {"model": "scripted-gpt", "api": "chat"}))
    assert isinstance(probe, GatewayAgent) and probe.uses_gateway and probe.model_id() == "scripted-gpt"
    assert probe.env(START) == {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8765", "ANTHROPIC_API_KEY": "tok-session",
                                "OPENAI_BASE_URL": "http://127.0.0.1:8765/v1", "OPENAI_API_KEY": "tok-session"}
    assert probe.command(START)[:6] == ["python", "-m", "agents.probe", "--api", "chat", "--model"]
    assert set(GATEWAY_FILES) <= set(probe.leaves)
    with pytest.raises(ValueError, match="without one"):
        probe.env(Start(seed=0, max_experiments=0))


@pytest.mark.parametrize("spec, message", [
    (AgentSpec("gpt-17"), "unknown agent kind 'gpt-17'; known: cheater-clock"),
    (AgentSpec("n", "noop", {"model": "x"}), "agent 'n' (kind noop): unknown parameter(s) model; its parameters: "
                                             "knows_budget"),
    (AgentSpec("n", "noop", {"knows_budget": "yes"}), "knows_budget must be true or false"),
    (AgentSpec("p", "gateway-probe", {"api": "grpc"}), "api must be one of messages, responses, chat"),
])
def test_a_bad_row_names_what_is_wrong(spec, message):
    with pytest.raises(UnknownAgent) as err:
        get_agent(spec)
    assert message in str(err.value)
