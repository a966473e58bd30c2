"""Faults injected into one real `arbench run` (Docker runtime; one run, as training is CI's scarcest resource): the
container of a session killed from outside, an agent that hangs without output (agents/controls/faults.py), and a
train.py that fills its session's small disk (a tmpfs this test mounts). The agent's faults are charged to the agent,
the infrastructure's are retried, and the run still verifies, publishes and passes `arbench check`.
(kill -9 of the harness itself: tests/harness/test_end_to_end.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from harness.runtime.docker import connect
from harness.runtime.images import LABEL
from support import write_config

pytestmark = [pytest.mark.slow, pytest.mark.docker]
ARBENCH = [sys.executable, "-m", "harness.cli"]
BUDGET_S = 20           # the hang's session lasts this long; noop's two experiments fit in it
SMALL_DISK = "8m"       # fault-fill-disk's session folder: its workspace (~0.4 MB) and little more


@dataclass(frozen=True)
class FaultRun:
    run_dir: Path
    result: subprocess.CompletedProcess

    def sessions(self) -> pd.DataFrame:
        """The published sessions table, indexed by session_id: the run must have survived every fault."""
        assert self.result.returncode == 0, self.result.stderr[-3000:]
        return pd.read_parquet(self.run_dir / "tables" / "sessions.parquet").set_index("session_id")


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """A folder on a small tmpfs (root only: skipped elsewhere, failed under CI=true)."""
    folder = tmp_path_factory.mktemp("faults") / "run" / "sessions" / "fault-fill-disk-r0"
    folder.mkdir(parents=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK}", "tmpfs", str(folder)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        message = f"cannot mount a small tmpfs: {mount.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=False)


def _kill_container_of(session: Path, sandbox: str, proc: subprocess.Popen) -> None:
    """docker kill of the session's container once it has trained once."""
    deadline = time.monotonic() + 300
    while not any((session / "ledger").glob("*.json")):
        assert time.monotonic() < deadline and proc.poll() is None, f"the run ended before {session.name} trained"
        time.sleep(0.2)
    containers = connect().containers.list(filters={"label": f"{LABEL}.sandbox={sandbox}"})
    assert len(containers) == 1, f"no single running container labelled {sandbox}"
    containers[0].kill()


@pytest.fixture(scope="module")
def fault_run(small_disk, docker_runtime, corpus_data) -> FaultRun:
    root = small_disk.parent.parent.parent
    config = write_config(root, ["noop", "fault-hang", "fault-fill-disk"], seeds=(1000,), runtime="docker")
    config.write_text(config.read_text().replace("seconds = 300", f"seconds = {BUDGET_S}"))
    run_dir = small_disk.parent.parent
    proc = subprocess.Popen([*ARBENCH, "run", str(config), "--out", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _kill_container_of(run_dir / "sessions" / "noop-r0", "arbench-e2e-noop-r0", proc)
        stdout, stderr = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    return FaultRun(run_dir, subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))


def _check(run_dir: Path) -> None:
    check = subprocess.run([*ARBENCH, "check", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]


def test_a_container_killed_from_outside_is_retried_as_an_infra_failure(fault_run):
    noop = fault_run.sessions().loc["noop-r0"]
    assert (noop["status"], noop["infra_retries"], noop["failure_kind"]) == ("done", 1, "")
    assert (fault_run.run_dir / "sessions" / "noop-r0.interrupted-1" / "session.json").exists()
    assert "| noop |" in (fault_run.run_dir / "leaderboard.md").read_text()
    _check(fault_run.run_dir)


def test_an_agent_that_hangs_silently_is_stopped_at_its_budget(fault_run):
    hang = fault_run.sessions().loc["fault-hang-r0"]
    assert (hang["end_reason"], hang["infra_retries"]) == ("time", 0)
    assert BUDGET_S <= hang["wall_seconds"] < BUDGET_S + 30
    _check(fault_run.run_dir)


def test_a_train_py_that_fills_the_disk_is_an_agent_failure_the_harness_survives(fault_run):
    fill = fault_run.sessions().loc["fault-fill-disk-r0"]
    assert (fill["status"], fill["end_reason"], fill["failure_kind"], fill["infra_retries"]) == \
        ("agent_error", "disk_full", "agent", 0), fill.to_dict()
    assert "disk full" in fill["message"]
    assert fill["n_experiments"] <= 1
    _check(fault_run.run_dir)
