"""The fixed scaffold (mini-swe-agent, agents/scaffold.py): its command, environment and manifest entries, and a
scripted run of the real `mini` on the host through the real gateway, on each wire (skipped where mini-swe-agent
is not installed on the host)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from agents.base import CONTINUE_PROMPT, START_PROMPT, AgentSpec, Start, UnknownAgent, get_agent
from agents.scaffold import CONFIG, ENV, mini_argv
from bench.profile import load_profile, render_train_py
from harness.gateway.usage import GatewayBudget
from harness.runtime.images import PROJECT_ROOT

START = Start(seed=7, max_experiments=3, gateway_url="http://127.0.0.1:8765/", token="tok-session")
HOST_CLIS = PROJECT_ROOT / "images" / ".build" / "clis" / "bin"   # where the process runtime finds the CLIs


def scaffold(model: str, **params):
    return get_agent(AgentSpec("mini", "mini-swe-agent", {"model": model, **params}))


@pytest.mark.parametrize("model, params, wire", [
    ("claude-opus-4-5", {}, ["--model", "anthropic/claude-opus-4-5"]),
    ("gpt-5", {}, ["--model", "openai/gpt-5", "--model-class", "litellm_response"]),
    ("gpt-5", {"api": "chat"}, ["--model", "openai/gpt-5"]),
])
def test_the_provider_picks_the_wire(model, params, wire):
    agent = scaffold(model, **params)
    assert agent.command(START) == ["python", "-m", "agents.scaffold", *wire, "--run", "0"]
    assert agent.continue_command(replace(START, resume=2)) == ["python", "-m", "agents.scaffold", *wire, "--run", "2"]


def test_environment_and_manifest():
    agent = scaffold("claude-opus-4-5")
    env = agent.env(START)
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8765" and env["OPENAI_API_KEY"] == "tok-session"
    assert env.items() >= ENV.items() and env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    described = agent.describe()
    assert described["cli"] == "mini-swe-agent" and described["cli_version"] == "2.4.6"
    assert described["model"] == "claude-opus-4-5" and described["settings"]["wire"] == "messages"
    prompts = f"{START_PROMPT}\n{CONTINUE_PROMPT}\n{CONFIG.read_text()}"
    assert described["prompt_sha256"] == hashlib.sha256(prompts.encode()).hexdigest()
    with pytest.raises(UnknownAgent, match="api must be auto, messages, responses or chat"):
        scaffold("gpt-5", api="grpc")


def test_mini_is_started_with_our_config_and_a_timeout_that_fits_a_training_run(tmp_path):
    profile = load_profile("cpu-tiny")
    (tmp_path / "profile.toml").write_text(profile.to_toml())
    first = mini_argv("openai/gpt-5", "litellm_response", 0, tmp_path, tmp_path / "home")
    assert first[:3] == ["mini", "--yolo", "--exit-immediately"]
    assert first[first.index("--task") + 1] == START_PROMPT
    assert first[first.index("--config") + 1] == str(CONFIG) and CONFIG.is_file()
    assert f"environment.timeout={2 * profile.time_budget + 120:.0f}" in first
    assert first[-1] == str(tmp_path / "home" / "mini" / "trajectory-0.json")
    again = mini_argv("anthropic/claude-opus-4-5", None, 1, tmp_path, tmp_path / "home")
    assert again[again.index("--task") + 1] == f"{START_PROMPT}\n\n{CONTINUE_PROMPT}" and "--model-class" not in again


def installed_mini() -> str:
    found = shutil.which("mini", path=f"{os.environ.get('PATH', '')}:{HOST_CLIS}")
    if found is None:
        pytest.skip(f"mini-swe-agent is not installed on this host (not on PATH, nor in {HOST_CLIS})")
    return found


SCRIPT = {"turns": [
    {"text": "First a look.", "tool_calls": [{"name": "bash", "arguments": {"command": "head -1 profile.toml"}}]},
    {"text": "A deeper model.", "tool_calls": [{"name": "bash", "arguments": {
        "command": "sed -i 's/^DEPTH = 2 /DEPTH = 3 /' train.py && grep '^DEPTH' train.py"}}]},
    {"tool_calls": [{"name": "bash", "arguments": {"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}}]},
]}


@pytest.mark.slow
@pytest.mark.parametrize("model, api, route", [("scripted-claude", "auto", "/v1/messages"),
                                               ("scripted-gpt", "auto", "/v1/responses"),
                                               ("scripted-gpt", "chat", "/v1/chat/completions")])
def test_mini_runs_through_the_gateway(model_gateway, tmp_path, model, api, route):
    mini = installed_mini()
    workspace, home, folder = tmp_path / "workspace", tmp_path / "home", tmp_path / "session"
    workspace.mkdir()
    home.mkdir()
    profile = load_profile("cpu-tiny")
    (workspace / "profile.toml").write_text(profile.to_toml())
    (workspace / "train.py").write_text(render_train_py(profile))
    model_gateway.scripted.load(SCRIPT)
    session_id = f"mini-{api}-{model}"
    grant = model_gateway.gateway.open_session(session_id, folder, GatewayBudget())
    agent = scaffold(model, api=api)
    start = Start(seed=0, max_experiments=0, gateway_url=grant.tcp_url, token=grant.token)
    env = {"PATH": f"{Path(sys.executable).parent}:{Path(mini).parent}:/usr/bin:/bin", "HOME": str(home),
           "PYTHONPATH": str(PROJECT_ROOT)} | agent.env(start)
    run = subprocess.run(agent.command(start), cwd=workspace, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=300)
    usage = model_gateway.gateway.close_session(session_id)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert usage.requests == 3 and usage.dollars > 0
    received = model_gateway.scripted.received()
    assert [r["path"] for r in received] == [route] * 3
    first = json.loads(received[0]["body"])
    assert START_PROMPT in json.dumps(first) and "killed after 132 seconds" in json.dumps(first)
    assert "DEPTH = 3 " in (workspace / "train.py").read_text()
    assert (home / "mini" / "trajectory-0.json").is_file()
    for key in model_gateway.keys.values():
        assert key not in run.stdout + run.stderr
