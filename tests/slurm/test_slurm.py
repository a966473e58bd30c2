"""`arbench run --executor slurm` on a real single-node Slurm (tests/slurm/conftest.py), in one shared run (training
is CI's scarcest resource): two `arbench run` invocations on one folder at once, and the job of a session cancelled
with scancel while it trains. Process runtime: the CI node has no Docker inside Slurm jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from harness.lease import read_lease
from support import write_config

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
ARBENCH = [sys.executable, "-m", "harness.cli"]


@dataclass(frozen=True)
class SlurmRun:
    run_dir: Path
    runs: list[subprocess.CompletedProcess]   # the two concurrent `arbench run`s
    cancelled: str                            # the Slurm job id scancel'ed while random-r0 trained


def _wait_for(what: str, ready, procs: list[subprocess.Popen], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert all(p.poll() is None for p in procs), f"a run ended before {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory, corpus_data) -> SlurmRun:
    root = tmp_path_factory.mktemp("slurm")
    config, out = write_config(root, ["noop", "random"]), root / "run"
    # a job takes the whole node, as a GPU job takes its GPU: trainings of two jobs side by side on 2 shared cores
    # would measure each other (over_budget), not the code under test
    config.write_text(config.read_text() + f"[slurm]\ncpus_per_job = {os.cpu_count()}\n")
    argv = [*ARBENCH, "run", str(config), "--out", str(out), "--executor", "slurm"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    session = out / "sessions" / "random-r0"
    _wait_for("random-r0 to train", lambda: any((session / "ledger").glob("*.json")), procs)
    lease = read_lease(session)
    assert lease is not None and lease.executor == "slurm"
    subprocess.run(["scancel", lease.job_id], check=True)
    runs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        runs.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return SlurmRun(out, runs, lease.job_id)


def _check(run_dir: Path) -> None:
    result = subprocess.run([*ARBENCH, "check", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_run_through_slurm_verifies_and_publishes(slurm_run):
    for run in slurm_run.runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"results in {slurm_run.run_dir}/" in run.stderr
    jobs = json.loads((slurm_run.run_dir / "jobs.json").read_text())
    assert {"noop-r0", "random-r0"} <= set(jobs) and {j["executor"] for j in jobs.values()} == {"slurm"}
    sessions = pd.read_parquet(slurm_run.run_dir / "tables" / "sessions.parquet")
    assert sorted(sessions["session_id"]) == ["noop-r0", "random-r0"] and set(sessions["status"]) == {"done"}
    ver = pd.read_parquet(slurm_run.run_dir / "tables" / "verifications.parquet")
    assert set(ver["session_id"]) == {"noop-r0", "random-r0"} and (ver["status"] == "ok").all()
    assert "| random |" in (slurm_run.run_dir / "leaderboard.md").read_text()
    _check(slurm_run.run_dir)


def test_a_cancelled_job_is_resubmitted_as_an_infra_retry(slurm_run):
    sessions = pd.read_parquet(slurm_run.run_dir / "tables" / "sessions.parquet").set_index("session_id")
    assert sessions.loc["random-r0", "infra_retries"] == 1 and sessions.loc["noop-r0", "infra_retries"] == 0
    assert sessions.loc["random-r0", "failure_kind"] == ""   # not held against the agent
    interrupted = json.loads((slurm_run.run_dir / "sessions" / "random-r0.interrupted-1" / "session.json").read_text())
    assert interrupted["status"] == "infra_error" and "stopped by Slurm" in interrupted["message"]
    jobs = json.loads((slurm_run.run_dir / "jobs.json").read_text())
    assert jobs["random-r0"]["attempt"] >= 1 and jobs["random-r0"]["job_id"] != slurm_run.cancelled
    assert any("resubmitted" in run.stderr for run in slurm_run.runs)
    _check(slurm_run.run_dir)


def test_two_runs_on_one_folder_do_not_clobber_each_other(slurm_run):
    experiments = pd.read_parquet(slurm_run.run_dir / "tables" / "experiments.parquet")
    assert not experiments.duplicated(["session_id", "idx"]).any()
    assert set(experiments["session_id"]) == {"noop-r0", "random-r0"}
    for _, rows in experiments.groupby("session_id"):   # numbered without gaps: one run of each session counted
        assert sorted(rows["idx"]) == list(range(len(rows)))
    assert len(list((slurm_run.run_dir / "sessions").glob("noop-r0*"))) == 1   # never run twice
    first, second = (run.stdout for run in slurm_run.runs)
    assert first == second   # both publish the same leaderboard
    _check(slurm_run.run_dir)


def test_a_job_sees_its_fake_gpu_as_the_worker_reads_it(slurm_cluster):
    code = ("from pathlib import Path; from harness.jobs import Placement, job_gpu; "
            "print(job_gpu(Placement(Path('.'), 'process', 'slurm'), True))")
    result = subprocess.run(["srun", "-N1", "--gres=gpu:1", "-t", "1", sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "0", result.stderr
