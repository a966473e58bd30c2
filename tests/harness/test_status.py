"""`arbench status` (harness/status.py) on a run in progress: synthetic folders, one session running under a live
lease with ledger records and spend so far, through the real CLI."""

from __future__ import annotations

import _thread
import io
import re
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from rich.console import Console

from bench.contracts import ClientReport, Evaluation, LedgerRecord
from harness.analyze import Tables
from harness.lease import hold_lease
from harness.status import show
from harness.store import write_json
from support import write_session_folders

ARBENCH = [sys.executable, "-m", "harness.cli"]


def session(sid, agent, status="done", **fields):
    return dict(session_id=sid, run_id="live", agent=agent, status=status, stage="done", message="",
                end_reason="time", n_experiments=3, started_at=time.time() - 100, wall_seconds=60.0,
                resumes=0, dollars=0.0) | fields


@pytest.fixture
def run_in_progress(tmp_path):
    """noop and greedy × 2 repeats, 60 s sessions on one slot, 2 held-out seeds of a 10 s training budget:
    noop-r0 and greedy-r0 done (noop-r0 verified), greedy-r1 running for 20 s, noop-r1 queued."""
    write_json(tmp_path / "run.json", {"run_id": "live", "config": {
        "agents": [{"name": "noop"}, {"name": "greedy"}], "repeats": 2, "budget": {"seconds": 60.0},
        "verify_seeds": [1000, 1001], "parallel": 1, "gpus": [], "profile": {"task": {"time_budget": 10}}}})
    verification = dict(session_id="noop-r0", agent="noop", role="baseline", seed=1000, split="val", bpb=2.0)
    write_session_folders(tmp_path, Tables(
        pd.DataFrame([session("noop-r0", "noop"), session("greedy-r0", "greedy", status="agent_error")]),
        pd.DataFrame(columns=["session_id", "agent"]), pd.DataFrame([verification]),
        pd.DataFrame(columns=["session_id", "agent"])))
    (tmp_path / "sessions" / "greedy-r0" / "verification.json").unlink()
    running = tmp_path / "sessions" / "greedy-r1"
    write_json(running / "session.json", session("greedy-r1", "greedy", status="running", stage="agent",
                                                 n_experiments=0, started_at=time.time() - 20, wall_seconds=None))
    write_json(running / "usage.json", {"dollars": 1.25})
    for n, bpb in enumerate((2.01, 1.95)):
        record = LedgerRecord(pid=100 + n, forged=False, forged_reason=None, observed_only=False,
                              started_at=time.time() - 10 + n, ended_at=time.time(),
                              client=ClientReport(evaluations=(Evaluation("val", bpb),)))
        (running / "ledger").mkdir(exist_ok=True)
        (running / "ledger" / f"run-{n}.json").write_text(record.to_json())
    with hold_lease(running, "job-7", "local", 1):
        yield tmp_path


def test_status_once_on_a_run_in_progress(run_in_progress):
    done = subprocess.run([*ARBENCH, "status", "--once", str(run_in_progress)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "live: 4 sessions: 2 done (1 failed), 1 running, 1 queued; 1 verified"
    # sessions: 40 s left of greedy-r1 (less the seconds this command took) + 60 s of noop-r1; verification:
    # 3 sessions x 2 seeds x 2 runs x 15 s
    assert re.fullmatch(r"time left ≈ 4m[23]\ds \(an estimate: the sessions' remaining budgets and 12 verification "
                        r"runs over 1 slot\)", lines[1])
    running = next(line.split() for line in lines if line.split()[:2] == ["greedy-r1", "greedy"])
    assert re.fullmatch(r"0m[23]\ds", running[2]) and running[3:] == ["2", "1.9500", "1.25"]
    assert ["noop-r1", "queued"] in [line.split()[:2] for line in lines] and "─" not in done.stdout   # plain


def test_status_refreshes_until_ctrl_c(run_in_progress):
    out = io.StringIO()
    # Ctrl-C as the terminal sends it, with Python's own SIGINT handler (an earlier test's library may have set another)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(1.0, _thread.interrupt_main).start()
        show(run_in_progress, Console(file=out, width=200, force_terminal=True), once=False, refresh_s=0.1)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "1 running" in out.getvalue()


def test_status_to_a_pipe_prints_once_and_exits(run_in_progress):
    """A log or a pipe cannot be redrawn: without --once the command still ends (a script's `arbench status`)."""
    done = subprocess.run([*ARBENCH, "status", str(run_in_progress)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("live: 4 sessions"), done.stderr
