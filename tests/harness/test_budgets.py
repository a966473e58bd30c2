"""The harness enforces every budget itself (harness/budget.py), whatever the agent does: the experiment cap through
the run ledger, the dollar and token caps and upstream outages through the LLM gateway (a real process in front of
the scripted model server), each ending the session with its reason. Process runtime: fast."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agents.base import AgentSpec, Start, get_agent
from bench.contracts import LEDGER_SOCKET_ENV, REFUSED_EXIT_CODE
from harness.collect import read_ledger
from harness.config import Budget
from harness.gateway.usage import GatewayBudget
from harness.ledger import LedgerService
from harness.runtime import get_runtime
from harness.jobs import session_gateway
from harness.runtime.base import GatewayAddress, SandboxSpec
from harness.session import SessionSpec, run_session
from support import fast_profile

PROBE = AgentSpec("probe", "gateway-probe")
TURN = {"text": "Reading train.py.", "usage": {"input_tokens": 1000, "output_tokens": 200}}   # scripted-claude:
DOLLARS_PER_TURN = (1000 * 1.0 + 200 * 10.0) / 1e6   # $1 / $10 per million input / output tokens: $0.003


def session(tmp_path: Path, data, gateway, agent: AgentSpec, budget: Budget):
    spec = SessionSpec(run_id="t", agent=agent, repeat=0, seed=0, profile=fast_profile(), source="corpus",
                       budget=budget)
    record = run_session(spec, tmp_path, get_runtime("process", cpus=1), data, gateway=gateway)
    return record, tmp_path / "sessions" / spec.session_id


def stopped_line(folder: Path) -> str:
    return (folder / "agent.log").read_text().strip().splitlines()[-1]


@pytest.mark.parametrize("cap, reason, requests", [
    (GatewayBudget(dollars=0.01), "dollars", 4),    # 3 x $0.003 < $0.01 <= 4 x $0.003
    (GatewayBudget(tokens=3000), "tokens", 3),      # 2 x 1200 < 3000 <= 3 x 1200
])
def test_the_gateway_caps_stop_an_agent_that_goes_on_calling(model_gateway, corpus_data, tmp_path, cap, reason,
                                                             requests):
    """The probe calls in a loop whatever the answer: the harness stops it, with the cap's reason, and keeps the
    gateway's totals; the requests refused past the cap cost nothing."""
    model_gateway.scripted.load({"turns": [TURN] * 50})
    record, folder = session(tmp_path, corpus_data, model_gateway.gateway, PROBE,
                             Budget(seconds=60, experiments=0, dollars=cap.dollars, tokens=cap.tokens))
    assert (record.status, record.end_reason) == ("done", reason), record.message
    assert record.requests == requests and record.retries == 0
    assert (record.input_tokens, record.output_tokens) == (1000 * requests, 200 * requests)
    assert record.dollars == pytest.approx(DOLLARS_PER_TURN * requests)
    assert (record.budget_dollars, record.budget_tokens) == (cap.dollars, cap.tokens)
    assert record.wall_seconds < 30 and record.final_commit
    assert f"session stopped: stopped at the {'dollar' if reason == 'dollars' else 'token'} cap" in stopped_line(folder)
    exchanges = [json.loads(line) for line in (folder / "transcript.jsonl").read_text().splitlines()]
    assert sum(e["refused"] is None for e in exchanges) == requests
    assert json.loads((folder / "usage.json").read_text())["stopped"] == reason


def test_a_long_outage_ends_the_session_as_infra_error_and_it_is_redone_on_resume(model_gateway, corpus_data,
                                                                                  tmp_path):
    model_gateway.scripted.load({"turns": [TURN | {"faults": [{"status": 500, "times": 10_000}]}]})
    record, folder = session(tmp_path, corpus_data, model_gateway.gateway, PROBE,
                             Budget(seconds=60, experiments=0, dollars=0.01))
    assert (record.status, record.end_reason) == ("infra_error", "infra_error"), record.message
    assert "the model provider failed for too long" in record.message and not record.final_commit
    assert record.requests == 0 and record.retries > 10 and record.dollars == 0   # not charged to the agent

    model_gateway.scripted.load({"turns": [TURN] * 50})   # the provider is back
    redone, _ = session(tmp_path, corpus_data, model_gateway.gateway, PROBE,
                        Budget(seconds=60, experiments=0, dollars=0.01))
    assert (redone.status, redone.end_reason, redone.requests) == ("done", "dollars", 4), redone.message
    aside = json.loads((folder.with_name("probe-r0.interrupted-1") / "session.json").read_text())
    assert (aside["status"], aside["end_reason"]) == ("infra_error", "infra_error")


def test_no_provider_key_in_the_process_runtimes_environment(model_gateway, tmp_path, monkeypatch):
    """The harness's own environment holds the keys too: the agent's holds only its session token."""
    for name, key in model_gateway.keys.items():
        monkeypatch.setenv(name, key)
    grant = model_gateway.gateway.open_session("env-check", tmp_path / "gw", GatewayBudget())
    model_gateway.scripted.load({"turns": [TURN]})
    probe = get_agent(PROBE)
    (tmp_path / "ws").mkdir()
    spec = SandboxSpec(name="t", workspace=tmp_path / "ws", network="gateway",
                       gateway=GatewayAddress(grant.socket_path, grant.tcp_url))
    with get_runtime("process").open(spec) as sandbox:
        env = probe.env(Start(seed=0, max_experiments=0, gateway_url=sandbox.gateway_url, token=grant.token))
        code = "import os, sys; sys.stdout.buffer.write(open('/proc/self/environ', 'rb').read())"
        sandbox.exec(["python", "-c", code], tmp_path / "env.log", timeout_s=30, env=env)
        called = sandbox.exec(["python", "-m", "agents.probe", "--requests", "1"], tmp_path / "probe.log",
                              timeout_s=30, env=env)
    model_gateway.gateway.close_session("env-check")
    environ = (tmp_path / "env.log").read_bytes()
    assert grant.token.encode() in environ and grant.tcp_url.encode() in environ
    assert not [name for name, key in model_gateway.keys.items() if key.encode() in environ]
    assert called.exit_code == 0 and "request 1: 200" in (tmp_path / "probe.log").read_text()
    [received] = model_gateway.scripted.received()
    assert received["headers"]["x-api-key"] == model_gateway.keys["ANTHROPIC_API_KEY"]   # the gateway's, upstream


def test_the_ledger_refuses_the_run_past_the_cap_before_it_trains(tmp_path):
    """sitecustomize is told at connect: the refused run says why and exits before train.py's first line."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "train.py").write_text("print('trained')\n")
    with LedgerService(workspace, tmp_path / "ledger", max_runs=1) as ledger, \
            get_runtime("process").open(SandboxSpec(name="t", workspace=workspace,
                                                    env={LEDGER_SOCKET_ENV: str(ledger.socket_path)})) as sandbox:
        first = sandbox.exec(["python", "train.py"], tmp_path / "first.log", timeout_s=60)
        assert not ledger.over_cap.is_set()
        second = sandbox.exec(["python", "train.py"], tmp_path / "second.log", timeout_s=60)
        assert ledger.over_cap.is_set()
        ledger.settle()
    assert first.exit_code == 0 and (tmp_path / "first.log").read_text() == "trained\n"
    assert second.exit_code == REFUSED_EXIT_CODE
    assert (tmp_path / "second.log").read_text() == \
        "[arbench] this run is refused: the session's experiment cap (1 runs) is reached\n"
    records = read_ledger(tmp_path / "ledger")
    assert [(r.refused, r.forged, r.client.exited) for r in records] == [(False, False, True), (True, False, False)]


def test_the_experiment_cap_stops_a_control_told_to_run_forever(corpus_data, tmp_path):
    """noop is not told the cap (no --max-experiments): the ledger refuses its third run and the session ends
    there, with the two runs it had."""
    record, folder = session(tmp_path, corpus_data, None, AgentSpec("noop-forever", "noop", {"knows_budget": False}),
                             Budget(seconds=300, experiments=2))
    assert (record.status, record.end_reason) == ("done", "experiments"), record.message
    assert "--max-experiments" not in json.dumps(json.loads((folder / "manifest.json").read_text())["agent"])
    assert stopped_line(folder).endswith("stopped at the experiment cap (2 runs): the run past it was refused")
    records = read_ledger(folder / "ledger")
    trained = [r for r in records if not r.refused]
    assert len(trained) == 2 and all(r.status == "ok" and not r.forged for r in trained)
    assert len(records) > 2 and all(r.refused for r in records[2:])   # one refused, or more before the stop landed
    rows = json.loads((folder / "experiments.json").read_text())
    assert [r["run_status"] for r in rows][:2] == ["ok", "ok"] and record.n_experiments == len(rows) <= 3
    assert record.requests == 0 and record.dollars == 0 and not os.path.exists(folder / "transcript.jsonl")


def test_without_a_cap_the_time_budget_ends_the_session(model_gateway, corpus_data, tmp_path):
    model_gateway.scripted.load({"turns": [TURN] * 1000})
    record, folder = session(tmp_path, corpus_data, model_gateway.gateway, PROBE, Budget(seconds=2, experiments=0))
    assert (record.status, record.end_reason) == ("done", "time") and record.requests > 3, record.message
    assert record.dollars == pytest.approx(DOLLARS_PER_TURN * record.requests)


def test_a_session_starts_its_gateway_when_its_agent_uses_it_and_stops_it_also_on_error(model_gateway, tmp_path):
    with session_gateway(AgentSpec("noop"), tmp_path / "gateway") as none:
        assert none is None and not (tmp_path / "gateway").exists()
    with pytest.raises(KeyError), session_gateway(AgentSpec("probe", "gateway-probe"), tmp_path / "gateway",
                                                  {"anthropic": model_gateway.scripted.url}) as gateway:
        assert gateway.process.poll() is None and gateway.socket_path.exists()
        raise KeyError("a session went wrong")
    assert gateway.process.poll() is not None and not gateway.socket_path.exists()
    assert (tmp_path / "gateway" / "gateway.log").exists()
