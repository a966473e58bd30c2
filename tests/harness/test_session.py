"""A session whose sandbox breaks: recorded as an infra failure, its rows collected, redone on resume."""

from __future__ import annotations

import json

import pytest

from agents.base import AgentSpec
from harness.config import Budget
from harness.runtime import get_runtime
from harness.runtime.base import RuntimeError_
from harness.session import SessionSpec, run_session
from support import fast_profile

pytestmark = pytest.mark.slow


class BreakingRuntime:
    """The real process runtime, whose engine 'goes away' right after the agent's command ran."""

    name = "process"

    def __init__(self):
        self.inner = get_runtime("process", cpus=2)

    def describe(self):
        return self.inner.describe()

    def open(self, spec):
        sandbox = self.inner.open(spec)
        real_exec = sandbox.exec

        def exec_then_break(*args, **kwargs):
            real_exec(*args, **kwargs)
            raise RuntimeError_("docker engine: connection reset")

        sandbox.exec = exec_then_break
        return sandbox


def test_broken_sandbox_is_an_infra_error_with_rows_kept_and_is_redone(tmp_path, corpus_data):
    spec = SessionSpec(run_id="t", agent=AgentSpec("noop"), repeat=0, seed=0, profile=fast_profile(), source="corpus",
                       budget=Budget(seconds=300, experiments=2))
    record = run_session(spec, tmp_path, BreakingRuntime(), corpus_data)
    folder = tmp_path / "sessions" / "noop-r0"
    assert record.status == "infra_error" and record.message.startswith("agent: RuntimeError_: docker engine")
    rows = json.loads((folder / "experiments.json").read_text())
    assert record.n_experiments == len(rows) == 2 and all(r["run_status"] == "ok" for r in rows)
    assert not record.final_commit   # not verified: the session did not end normally

    redone = run_session(spec, tmp_path, get_runtime("process", cpus=2), corpus_data)
    assert redone.status == "done" and redone.final_commit
    aside = tmp_path / "sessions" / "noop-r0.interrupted-1"
    assert json.loads((aside / "session.json").read_text())["status"] == "infra_error"
    assert len(json.loads((aside / "experiments.json").read_text())) == 2


def probe_session(tmp_path, model_gateway, corpus_data, **params):
    spec = SessionSpec(run_id="t", agent=AgentSpec("probe", "gateway-probe", params), repeat=0, seed=0,
                       profile=fast_profile(), source="corpus", budget=Budget(seconds=120, experiments=0))
    record = run_session(spec, tmp_path, get_runtime("process", cpus=2), corpus_data, gateway=model_gateway.gateway)
    return record, (tmp_path / "sessions" / spec.session_id / "agent.log").read_text()


def test_an_agent_that_stops_early_is_continued_until_the_limit(tmp_path, model_gateway, corpus_data, monkeypatch):
    monkeypatch.setattr("harness.session.MAX_RESUMES", 2)
    model_gateway.scripted.load({"turns": [{"text": "ok", "usage": {"input_tokens": 10, "output_tokens": 2}}] * 20})
    record, log = probe_session(tmp_path, model_gateway, corpus_data, requests=2, continued=True)
    assert (record.status, record.end_reason, record.resumes, record.requests) == ("done", "agent_exit", 2, 6)
    assert "resume 1 after 2 model requests:" in log and "resume 2 after 4 model requests:" in log and "not continued: it was continued 2 times already" in log
    assert "continued 2 times" in record.message
    transcript = (tmp_path / "sessions" / "probe-r0" / "transcript.md").read_text()
    assert transcript.count("probe request") >= 2 and "resume 2 after 4 model requests" in transcript


def test_an_agent_whose_run_asked_nothing_is_not_continued(tmp_path, model_gateway, corpus_data):
    """A model the gateway's price table lacks is refused before it is asked: a broken agent, not a lazy one."""
    record, log = probe_session(tmp_path, model_gateway, corpus_data, model="no-such-model", requests=1,
                                continued=True)
    assert (record.end_reason, record.resumes, record.requests) == ("agent_exit", 0, 0), record.message
    assert "not continued: its last run asked the model nothing" in log


def test_an_agent_without_a_continue_command_is_never_continued(tmp_path, model_gateway, corpus_data):
    record, log = probe_session(tmp_path, model_gateway, corpus_data, requests=1)
    assert (record.end_reason, record.resumes, record.requests) == ("agent_exit", 0, 1)
    assert "[arbench]" not in log
