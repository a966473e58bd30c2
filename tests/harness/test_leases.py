"""Resume under leases: a session another harness holds is waited for and never clobbered; one whose holder was
killed is set aside and redone (an infra failure, never the agent's). Nothing here trains: the redoing job's runtime
is broken, so its session ends as an infra failure at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest

from harness.config import load_config
from harness.executors import dispatch
from harness.executors.dispatch import Dispatch, Journal
from harness.executors.local import LocalExecutor
from harness.jobs import Placement, SessionJob, Skipped, run_job
from harness.lease import LEASE_FILE, read_lease
from harness.run import plan
from harness.session import new_record
from harness.store import failure_kind, read_json
from support import write_config

HOLDER = """
import json, sys, time
from pathlib import Path
from harness.lease import hold_lease
from harness.store import write_json
folder, record, seconds = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), float(sys.argv[3])
with hold_lease(folder, "other-harness-1", "local", 0, heartbeat_s=0.5):
    write_json(folder / "session.json", record | {"status": "running", "stage": "agent"})
    (folder / "work.txt").write_text("the other harness's work")
    time.sleep(seconds)
    write_json(folder / "session.json", record)
"""


@pytest.fixture
def held_session(tmp_path, corpus_data, monkeypatch):
    """A session job, and a function starting another process that holds the session's lease for some seconds."""
    monkeypatch.setattr(dispatch, "WATCH_S", 0.2)
    config = load_config(write_config(tmp_path, ["noop"], seeds=(1000,)))
    job = SessionJob(plan(config)[0], Placement(tmp_path / "run", "no-such-runtime", "local"))
    record = replace(new_record(job.spec, "process", job.folder, None), status="done", stage="done",
                     final_commit="0" * 40, ended_at=time.time(), wall_seconds=1.0)
    (tmp_path / "record.json").write_text(json.dumps(asdict(record)))

    def hold(seconds: float) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(job.folder), str(tmp_path / "record.json"),
                                 str(seconds)], start_new_session=True)
        deadline = time.monotonic() + 30
        while not (job.folder / "work.txt").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        return proc
    return job, record, hold


def test_a_session_held_by_another_harness_is_waited_for_and_not_clobbered(held_session):
    job, record, hold = held_session
    holder = hold(seconds=3)
    assert isinstance(run_job(job), Skipped)   # a job that starts anyway does nothing to it
    results = Dispatch(LocalExecutor([None]), Journal(job.placement.run_dir), max_resubmits=2).run([job])
    holder.wait()
    assert results[job.key] == record   # the holder's record, as it wrote it
    assert (job.folder / "work.txt").read_text() == "the other harness's work"
    assert not list(job.folder.parent.glob("*.interrupted-*")) and not (job.folder / LEASE_FILE).exists()
    assert not (job.placement.run_dir / "jobs.json").exists()   # nothing was submitted


def test_a_session_whose_holder_was_killed_is_set_aside_and_redone_as_an_infra_failure(held_session):
    job, _, hold = held_session
    holder = hold(seconds=600)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    assert read_lease(job.folder) is not None   # left behind, its pid dead
    results = Dispatch(LocalExecutor([None]), Journal(job.placement.run_dir), max_resubmits=1).run([job])
    record = results[job.key]
    assert (record.status, record.infra_retries) == ("infra_error", 2)   # the killed attempt, then the first redo
    assert "no-such-runtime" in record.message and failure_kind(asdict(record), {}) == "infra"
    aside = job.folder.with_name(f"{job.key}.interrupted-1")
    assert (aside / "work.txt").exists() and read_json(aside / "session.json")["status"] == "running"
    assert not (job.folder / LEASE_FILE).exists()
    assert read_json(job.placement.run_dir / "jobs.json")[job.key]["attempt"] == 1   # resubmitted once
