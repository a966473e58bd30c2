"""The agent CLIs (agents/claude_code.py, codex.py, opencode.py): their commands, environments and manifest entries;
and each of them and the fixed scaffold (agents/scaffold.py) for real, through harness.session.run_session, with the real gateway in front of the scripted model
server playing tests/agents/scenario.py: in the CPU image with Docker, and with the process runtime where the CLIs
are installed on the host (images/.build/clis, `make images`).

One session per agent and runtime checks it all, as CI has two cores: the agent sets up and records its baseline,
stops, is continued in its own conversation, runs and records the second experiment, and the dollar cap ends it on
the script's last turn, mid-conversation. Its experiments are collected and pass the integrity checks, the gateway's
totals are the script's usage priced by the table, and no provider key is in its log, its transcript, its home or its
workspace. In Docker the scenario also runs the isolation probe: the CLI runs as a non-root user, finds no provider
key in its environment, any process's environment or command line, or any file it or the harness wrote, cannot read
the hidden test split and cannot write to the data, the image or the run ledger. The process runtime isolates
nothing (the probe would write to the host's data): there only the session itself is checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from agents.base import CONTINUE_PROMPT, START_PROMPT, AgentSpec, Start, get_agent
from harness.config import Budget
from harness.runtime import get_runtime
from harness.runtime.images import LABEL, PROJECT_ROOT
from harness.runtime.process import HOST_CLIS_BIN
from harness.session import SessionSpec, run_session
from scenario import Probe, dollar_cap, dollars, scenario, script_usage
from support import fast_profile, write_config

START = Start(seed=7, max_experiments=3, gateway_url="http://127.0.0.1:8765/", token="tok-session")
COMMANDS = {"claude-code": "claude", "codex": "codex", "opencode": "opencode"}
SESSION_COMMANDS = COMMANDS | {"mini-swe-agent": "mini"}    # the fixed scaffold runs the same sessions
DIALECTS = {"claude-code": "claude", "codex": "codex", "opencode": "opencode", "mini-swe-agent": "mini"}
MODELS = {"messages": "scripted-claude", "responses": "scripted-gpt"}
DOCKER_WIRES = {"claude-code": "messages", "codex": "responses", "opencode": "messages", "mini-swe-agent": "responses"}
PROCESS_WIRES = {"claude-code": "messages", "codex": "responses", "opencode": "responses",   # opencode, mini: both
                 "mini-swe-agent": "messages"}
WRITE_TARGETS = ("/", "/etc", "/opt", "/opt/venv", "/usr/local/bin", "/data", "/ledger")


def cli(kind: str, **params):
    return get_agent(AgentSpec(kind, kind, {"model": "claude-opus-5-5", **params}))


# ---------------------------------------------------------------------------
# The adapters

@pytest.mark.parametrize("kind", COMMANDS)
def test_each_cli_starts_headless_on_the_start_prompt_and_continues_its_own_conversation(kind):
    agent = cli(kind)
    first, again = agent.command(START), agent.continue_command(replace(START, resume=1))
    assert START_PROMPT in first and CONTINUE_PROMPT in again and CONTINUE_PROMPT not in first
    assert {"--continue", "--last"} & set(again)
    for argv in (first, again):
        assert START.token not in " ".join(argv) and "json" in " ".join(argv)
    described = agent.describe()
    pinned = json.loads((PROJECT_ROOT / "agents" / "clis" / kind / "package.json").read_text())["dependencies"]
    assert described["cli"] == kind and described["cli_version"] == next(iter(pinned.values()))
    assert described["model"] == "claude-opus-5-5" and described["settings"] and len(described["prompt_sha256"]) == 64
    env = agent.env(START)
    assert env["ANTHROPIC_API_KEY"] == env["OPENAI_API_KEY"] == "tok-session"
    assert START.token not in json.dumps(described)


def test_claude_code_skips_permissions_names_the_model_everywhere_and_waits_for_training_runs():
    agent = cli("claude-code", command_timeout_s=900)
    argv = agent.command(START)
    assert argv[:3] == ["claude", "-p", START_PROMPT] and argv[argv.index("--model") + 1] == "claude-opus-5-5"
    assert "--dangerously-skip-permissions" in argv and argv[argv.index("--disallowedTools") + 1:][:2] == \
        ["WebSearch", "WebFetch"]
    env = agent.env(START)
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8765" and env["IS_SANDBOX"] == "1"
    assert {env[v] for v in ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_SMALL_FAST_MODEL")} == \
        {"claude-opus-5-5"}
    assert env["BASH_DEFAULT_TIMEOUT_MS"] == env["BASH_MAX_TIMEOUT_MS"] == "900000"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    with pytest.raises(ValueError, match="command_timeout_s"):
        cli("claude-code", command_timeout_s=5)


def test_codex_gets_a_provider_on_the_gateways_responses_api_and_no_web_search():
    argv = cli("codex", model="gpt-6.2-sol").command(START)
    assert argv[:4] == ["codex", "exec", "--json", "--dangerously-bypass-approvals-and-sandbox"]
    config = [argv[i + 1] for i, a in enumerate(argv) if a == "-c"]
    assert "model_provider=arbench" in config and 'web_search="disabled"' in config
    assert "allow_login_shell=false" in config
    [provider] = [c for c in config if c.startswith("model_providers.arbench=")]
    assert 'base_url="http://127.0.0.1:8765/v1"' in provider and 'wire_api="responses"' in provider
    assert 'env_key="OPENAI_API_KEY"' in provider
    assert cli("codex").continue_command(START)[:5] == ["codex", "exec", "resume", "--last", "--json"]


@pytest.mark.parametrize("model, api, sdk, key", [
    ("claude-opus-5-5", "auto", "@ai-sdk/anthropic", "ANTHROPIC_API_KEY"),
    ("gpt-6.2-sol", "auto", "@ai-sdk/openai", "OPENAI_API_KEY"),
    ("claude-opus-5-5", "responses", "@ai-sdk/openai", "OPENAI_API_KEY")])
def test_opencode_is_configured_for_the_gateway_by_the_models_wire(model, api, sdk, key):
    env = cli("opencode", model=model, api=api).env(START)
    config = json.loads(env["OPENCODE_CONFIG_CONTENT"])
    [(name, provider)] = config["provider"].items()
    assert provider["npm"] == sdk and provider["options"] == {"baseURL": "http://127.0.0.1:8765/v1",
                                                              "apiKey": f"{{env:{key}}}"}
    assert config["model"] == config["small_model"] == f"{name}/{model}" and list(provider["models"]) == [model]
    assert config["permission"]["webfetch"] == "deny" and START.token not in env["OPENCODE_CONFIG_CONTENT"]
    assert env["OPENCODE_DISABLE_PROJECT_CONFIG"] == "1"
    with pytest.raises(ValueError, match="api must be"):
        cli("opencode", api="grpc")


def test_the_opencode_launcher_marks_its_plugin_sdk_installed_then_becomes_opencode(tmp_path):
    """Else opencode would `npm install` it into the session's home at every start."""
    fake = tmp_path / "bin" / "opencode"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "opencode $*"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "PYTHONPATH": str(PROJECT_ROOT)}
    argv = cli("opencode").command(START)
    run = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "opencode " + " ".join(argv[3:]), run.stderr
    config = tmp_path / "home" / ".config" / "opencode"
    lock = json.loads((config / "package-lock.json").read_text())
    assert "@opencode-ai/plugin" in lock["packages"][""]["dependencies"] and (config / "node_modules").is_dir()


# ---------------------------------------------------------------------------
# Each CLI for real

def run_cli_session(kind: str, wire: str, runtime, model_gateway, data, root: Path, probe: Probe | None):
    """The scenario (stop after the baseline, continue, second experiment, dollar cap) as a real session."""
    model = MODELS[wire]
    script = scenario(DIALECTS[kind], wire, stop_after_first=True, probe=probe, cap_turn=True)
    model_gateway.scripted.load(script)
    spec = SessionSpec(run_id="t", agent=AgentSpec(kind, kind, {"model": model}), repeat=0, seed=0,
                       profile=fast_profile(), source="corpus",
                       budget=Budget(seconds=300, experiments=0, dollars=dollar_cap(script, model)))
    record = run_session(spec, root, runtime, data, gateway=model_gateway.gateway)
    folder = root / "sessions" / spec.session_id
    log = (folder / "agent.log").read_text(errors="replace")
    assert (record.status, record.end_reason) == ("done", "dollars"), f"{record.message}\n{log[-3000:]}"
    assert record.resumes == 1 and re.search(r"\[arbench\] .*resume 1 after 3 model requests", log), log[-3000:]
    assert (folder / "transcript.md").is_file()

    experiments = json.loads((folder / "experiments.json").read_text())
    assert [(e["description"], e["run_status"]) for e in experiments] == \
        [("baseline", "ok"), ("MATRIX_LR 0.04 -> 0.05", "ok")] and record.n_experiments == 2
    assert experiments[0]["status"] == "keep" and experiments[1]["status"] in ("keep", "discard")
    assert json.loads((folder / "findings.json").read_text()) == []

    expected = script_usage(script)
    assert (record.requests, record.input_tokens, record.output_tokens, record.cache_read_tokens,
            record.cache_write_tokens) == (len(script["turns"]), expected.input_tokens, expected.output_tokens,
                                           expected.cache_read_tokens, expected.cache_write_tokens)
    assert record.dollars == pytest.approx(dollars(script, model), abs=1e-9)

    continued = [r["body"] for r in model_gateway.scripted.received() if CONTINUE_PROMPT in r["body"]]
    assert continued and START_PROMPT in continued[0], "the continue started a new conversation"
    manifest = json.loads((folder / "manifest.json").read_text())["agent"]
    assert manifest["cli"] == kind and manifest["model"] == model
    for key in model_gateway.keys.values():
        for path in [folder / "agent.log", folder / "transcript.jsonl", *(p for where in ("home", "workspace")
                                                                           for p in (folder / where).rglob("*"))]:
            assert not path.is_file() or key.encode() not in path.read_bytes(), path
    return log


def host_cli(kind: str) -> None:
    if not (HOST_CLIS_BIN / SESSION_COMMANDS[kind]).exists():
        pytest.skip(f"{SESSION_COMMANDS[kind]} is not installed on this host ({HOST_CLIS_BIN}; `make images` installs it)")


def image_cli(runtime, kind: str) -> None:
    clis = json.loads(runtime.image.labels.get(f"{LABEL}.agent-clis") or "{}")
    if kind not in clis:
        message = f"the image {runtime.tag} has no {kind} (label {LABEL}.agent-clis: {clis}); run `make images`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.clis
@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.parametrize("kind", SESSION_COMMANDS)
def test_each_cli_runs_the_session_in_docker_as_a_non_root_user_with_no_key_in_reach(
        kind, docker_runtime, model_gateway, corpus_data, tmp_path, monkeypatch):
    image_cli(docker_runtime, kind)
    for name, key in model_gateway.keys.items():   # in the harness's environment: none may reach the container
        monkeypatch.setenv(name, key)
    key_regex = "|".join(re.sub(r"[0-9a-f]{32}$", "[0-9a-f]{32}", k) for k in model_gateway.keys.values())
    assert not any(key in key_regex for key in model_gateway.keys.values())   # their shape only, never a key
    probe = Probe(key_regex, str(corpus_data.test_dir))
    log = run_cli_session(kind, DOCKER_WIRES[kind], docker_runtime, model_gateway, corpus_data, tmp_path, probe)

    uids = set(re.findall(r"probe uid (\d+)", log))   # a set: some CLIs log an output twice
    assert len(uids) == 1 and uids != {"0"}, log[-3000:]   # `agent` (1000), or the harness's own user if not root
    seen = {where: (int(read), int(keys)) for where, read, keys in
            re.findall(r"probe (env|environ|cmdline|files) (\d+) (\d+)", log)}
    assert set(seen) == {"env", "environ", "cmdline", "files"} and all(read > 0 for read, _ in seen.values()), seen
    assert all(keys == 0 for _, keys in seen.values()), seen
    assert set(re.findall(r"probe unreadable (/[\w./-]+)", log)) == {"/heldout", str(corpus_data.test_dir)}
    assert "probe read /" not in log and "probe wrote /" not in log
    assert set(re.findall(r"probe refused (/[\w./-]*)", log)) == set(WRITE_TARGETS)
    assert not (corpus_data.data_dir / "arbench-probe").exists()


@pytest.mark.clis
@pytest.mark.slow
@pytest.mark.parametrize("kind", SESSION_COMMANDS)
def test_each_cli_runs_the_session_in_the_process_runtime(kind, model_gateway, corpus_data, tmp_path, monkeypatch):
    host_cli(kind)
    for name, key in model_gateway.keys.items():
        monkeypatch.setenv(name, key)
    run_cli_session(kind, PROCESS_WIRES[kind], get_runtime("process", cpus=2), model_gateway, corpus_data,
                    tmp_path, probe=None)


@pytest.mark.clis
@pytest.mark.slow
@pytest.mark.docker
def test_a_cli_session_is_verified_and_ranked_like_any_other(docker_runtime, corpus_data, tmp_path):
    """The user's path: `arbench run --scripted` with a CLI row, in containers: its session, then its verification
    on a held-out seed and the leaderboard, as for a control."""
    image_cli(docker_runtime, "claude-code")
    script = scenario("claude", "messages", cap_turn=True)
    (tmp_path / "script.json").write_text(json.dumps(script))
    config = write_config(tmp_path, ["noop"], experiments=0, seeds=(1000,), runtime="docker")
    config.write_text(config.read_text().replace('agents = ["noop"]\n', "").replace(
        "experiments = 0\n", f"experiments = 0\ndollars = {dollar_cap(script, 'scripted-claude')}\n")
        + '[agents.claude]\nkind = "claude-code"\nmodel = "scripted-claude"\n')
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(config), "--out", str(out), "--scripted",
                          str(tmp_path / "script.json")], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "cost ceiling: $" in run.stderr and "1 LLM sessions" in run.stderr
    sessions = pd.read_parquet(out / "tables" / "sessions.parquet").set_index("session_id")
    claude = sessions.loc["claude-r0"]
    assert (claude["end_reason"], claude["kind"], claude["n_experiments"]) == ("dollars", "claude-code", 2)
    assert claude["cli_version"] == get_agent(AgentSpec("c", "claude-code", {"model": "x"})).cli_version()
    verified = pd.read_parquet(out / "tables" / "verifications.parquet")
    assert set(verified["role"]) == {"baseline", "final"} and set(verified["seed"]) == {1000}
    assert (verified["status"] == "ok").all(), verified.to_dict("records")
    assert "claude" in (out / "leaderboard.md").read_text()
