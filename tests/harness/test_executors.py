"""Executors: jobs are plain data that pickle (Slurm ships them to nodes); the local pool runs them; a verification
pair the infrastructure fails is resubmitted, then recorded on its session as an infra failure while the run still
verifies the rest and publishes; agents are interleaved; the submit host never imports torch. Nothing here trains:
the one session is a finished folder made by hand and its pairs fail in a broken runtime (the real local runs are
tests/harness/test_end_to_end.py's, which go through the same executor)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from harness import jobs, run, verify
from bench.profile import load_profile
from harness.config import SlurmSettings, load_config, parse_config
from harness.executors import slurm
from harness.executors.base import Executor, Finished, Submitted
from harness.executors.dispatch import Dispatch, Journal
from harness.jobs import GatewaySetup, PairFailed, PairJob, Placement, SessionJob, Skipped, run_job
from harness.run import _config_fingerprint, plan, run_benchmark
from harness.runtime.base import Runtime, RuntimeError_
from harness.session import new_record
from harness.store import read_json, write_json
from harness.workspace import make_workspace
from support import fast_profile, write_config


def a_session_job(tmp_path) -> SessionJob:
    config = load_config(write_config(tmp_path, ["noop"], seeds=(1000,)))
    return SessionJob(plan(config)[0], Placement(tmp_path / "run", "process", "slurm", cpus=2),
                      GatewaySetup(tmp_path / "keys.env", {"anthropic": "http://127.0.0.1:9"}))


def test_every_job_and_result_pickles(tmp_path):
    session = a_session_job(tmp_path)
    pair = PairJob(fast_profile(), None, (1000,), ("val", "test"), b"baseline", b"final", 1000, session.placement)
    for thing in (session, pair, replace(session, attempt=1, replaces="42_0"), Skipped("noop-r0", "job 1"),
                  PairFailed(pair.key, "docker: no such container"), run_job):
        assert pickle.loads(pickle.dumps(thing)) == thing
    assert pair.key == f"pair-{pair.cache_folder.parent.name}-1000" and session.key == "noop-r0"


def test_agents_are_interleaved_across_the_queue():
    config = parse_config({"run_id": "i", "profile": "cpu-tiny", "agents": ["noop", "random", "tpe"], "repeats": 2})
    assert [s.session_id for s in plan(config)] == ["noop-r0", "random-r0", "tpe-r0", "noop-r1", "random-r1",
                                                    "tpe-r1"]


def test_the_executor_is_no_part_of_the_runs_fingerprint():
    raw = {"run_id": "f", "profile": "cpu-tiny", "agents": ["noop"]}
    on_slurm = parse_config(raw | {"executor": "slurm", "max_resubmits": 5, "slurm": {"partition": "gpu",
                                                                                     "time_limit": 9}})
    assert _config_fingerprint(parse_config(raw)) == _config_fingerprint(on_slurm)
    assert (on_slurm.executor, on_slurm.slurm.partition, on_slurm.slurm.time_limit) == ("slurm", "gpu", 9)


def test_the_submit_host_imports_no_torch():
    code = ("import sys, harness.cli, harness.run, harness.jobs, harness.executors.local, harness.executors.slurm; "
            "assert not {'torch', 'docker'} & set(sys.modules), sorted({'torch', 'docker'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)


class LosesFirstAttempts(Executor):
    """An executor whose nodes die under every job's first attempt (as a scancel or a lost node would)."""
    name = "local"

    def __init__(self):
        self.submitted: list[Submitted] = []

    def submit(self, jobs_):
        new = [Submitted(job, f"fake-{len(self.submitted) + i}") for i, job in enumerate(jobs_)]
        self.submitted += new
        return new

    def wait(self, submitted, timeout_s):
        return [Finished(s, lost="NODE_FAIL") if s.job.attempt == 0 else
                Finished(s, result=PairFailed(s.key, "still broken")) for s in submitted]

    def attach(self, job, job_id):
        return None

    def cancel(self, submitted):
        pass


def test_a_lost_job_is_resubmitted_up_to_the_limit_then_its_failure_is_the_result(tmp_path):
    pair = PairJob(fast_profile(), None, (1000,), ("val",), b"b", b"f", 1000, Placement(tmp_path, "process", "local"))
    executor = LosesFirstAttempts()
    results = Dispatch(executor, Journal(tmp_path), max_resubmits=2).run([pair])
    assert [s.job.attempt for s in executor.submitted] == [0, 1, 2]
    assert [s.job.replaces for s in executor.submitted] == ["", "fake-0", "fake-1"]
    assert results[pair.key] == PairFailed(pair.key, "still broken")
    assert read_json(tmp_path / "jobs.json")[pair.key] == {"job_id": "fake-2", "executor": "local", "attempt": 2,
                                                           "submitted_at": pytest.approx(time.time(), abs=60)}


class DockerDown(Runtime):
    name = "docker-down"

    def __init__(self, cpus=None):
        pass

    def open(self, spec):
        raise RuntimeError_("docker: 500 Server Error: container create failed")


def test_a_pair_the_infrastructure_fails_is_recorded_on_its_session_and_the_run_publishes(tmp_path, corpus_data,
                                                                                           monkeypatch):
    """A finished session whose verification runs in a runtime that cannot start a container: the pair job is
    retried (the verifier's own retries, then one resubmission), then verification.json records the error, the
    sessions table calls it an infra failure, and the leaderboard is still written."""
    monkeypatch.setattr(verify, "INFRA_BACKOFF_S", 0.0)
    for module in (jobs, run):
        monkeypatch.setattr(module, "get_runtime", lambda name, cpus=None: DockerDown())
    config = replace(load_config(write_config(tmp_path, ["noop"], seeds=(1000,))), max_resubmits=1)
    run_dir = tmp_path / "run"
    spec = plan(config)[0]
    folder = run_dir / "sessions" / spec.session_id
    baseline = make_workspace(folder / "workspace", fast_profile(), tag="e2e-noop-r0")
    write_json(folder / "session.json", replace(new_record(spec, "docker-down", folder, None), status="done",
                                                stage="done", end_reason="agent_exit", baseline_commit=baseline.commit,
                                                final_commit=baseline.commit, ended_at=time.time(), wall_seconds=1.0))
    write_json(folder / "manifest.json", {"host": "node-7", "agent": {"kind": "noop"}})
    write_json(folder / "experiments.json", [])
    write_json(folder / "findings.json", [])

    result = run_benchmark(config, run_dir, runtime_name="docker-down")
    verification = read_json(folder / "verification.json")
    assert "container create failed" in verification["error"] and verification["runs"] == []
    pairs = [job for key, job in read_json(run_dir / "jobs.json").items() if key.startswith("pair-")]
    assert [job["attempt"] for job in pairs] == [1]   # resubmitted once
    sessions = pd.read_parquet(run_dir / "tables" / "sessions.parquet").set_index("session_id")
    assert sessions.loc["noop-r0", ["failure_kind", "host", "infra_retries"]].tolist() == ["infra", "node-7", 0]
    assert "noop" in result.leaderboard and (run_dir / "leaderboard.md").exists()


def test_slurm_jobs_ask_for_one_gpu_when_the_profile_needs_one_and_their_time(tmp_path):
    session = a_session_job(tmp_path)   # cpu profile, budget 300 s
    gpu_session = replace(session, spec=replace(session.spec, profile=load_profile("h100")))
    executor = slurm.SlurmExecutor(tmp_path / "slurm", SlurmSettings(partition="gpu", account="lab"), "r")
    cpu, gpu = (dict(executor._resources(job)) for job in (session, gpu_session))
    assert "slurm_gres" not in cpu and gpu["slurm_gres"] == "gpu:1"
    assert cpu["timeout_min"] == 5 + slurm.SLURM_MARGIN_MIN
    assert (cpu["slurm_partition"], cpu["slurm_account"]) == ("gpu", "lab")
    pair = PairJob(load_profile("h100"), None, (1000,), ("val",), b"b", b"f", 1000, session.placement)
    assert dict(executor._resources(pair))["timeout_min"] == slurm.pair_minutes(pair) > 6 * 5   # 3 attempts × 2 runs
    fixed = slurm.SlurmExecutor(tmp_path / "slurm", SlurmSettings(time_limit=240, gpus_per_job=2), "r")
    assert (dict(fixed._resources(gpu_session))["timeout_min"], dict(fixed._resources(gpu_session))["slurm_gres"]) \
        == (240, "gpu:2")


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, squeue, scancel and srun on PATH, played by tests/harness/fake_slurm.py (jobs are local processes)."""
    script, bin_dir, state = Path(__file__).with_name("fake_slurm.py"), tmp_path / "fake-bin", tmp_path / "fake-state"
    bin_dir.mkdir()
    state.mkdir()
    for command in ("sbatch", "squeue", "scancel", "srun"):
        (bin_dir / command).write_text(f'#!/bin/sh\nexec {sys.executable} {script} {command} "$@"\n')
        (bin_dir / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    monkeypatch.setattr(slurm, "POLL_S", 0.5)
    return state


def slurm_jobs(tmp_path, agents: list[str]) -> list[SessionJob]:
    """Session jobs whose runtime cannot start: each ends at once as an infra failure (nothing trains)."""
    config = load_config(write_config(tmp_path, agents, seeds=(1000,)))
    return [SessionJob(spec, Placement(tmp_path / "run", "no-such-runtime", "slurm")) for spec in plan(config)]


def test_slurm_jobs_run_as_an_array_and_a_lost_one_is_resubmitted(tmp_path, fake_slurm, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_LOSE", "100_0")   # the first array's first task: its node died before it ran
    jobs_ = slurm_jobs(tmp_path, ["noop", "random"])
    run_dir = jobs_[0].placement.run_dir
    executor = slurm.SlurmExecutor(run_dir / "slurm", SlurmSettings(), "e2e")
    results = Dispatch(executor, Journal(run_dir), max_resubmits=1).run(jobs_)
    for job in jobs_:
        assert results[job.key].status == "infra_error" and "no-such-runtime" in results[job.key].message
    submitted = read_json(run_dir / "jobs.json")
    assert submitted["noop-r0"]["attempt"] == 1 and submitted["noop-r0"]["job_id"] != "100_0"
    assert submitted["random-r0"]["attempt"] == 1   # its infra failure is redone once too
    assert list((run_dir / "slurm").glob("100_1_0_result.pkl"))   # task 1 of the first array ran
    assert not any((job.folder / "lease.json").exists() for job in jobs_)


def test_no_wait_submits_and_a_later_run_reattaches_to_the_running_job(tmp_path, fake_slurm, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_DELAY", "3")   # queued a while
    job = slurm_jobs(tmp_path, ["noop"])[0]
    run_dir = job.placement.run_dir

    def dispatch(wait: bool):
        return Dispatch(slurm.SlurmExecutor(run_dir / "slurm", SlurmSettings(), "e2e"), Journal(run_dir),
                        max_resubmits=0).run([job], wait=wait)
    assert dispatch(wait=False) == {}
    assert read_json(run_dir / "jobs.json")["noop-r0"]["job_id"] == "100"
    assert dispatch(wait=True)["noop-r0"].status == "infra_error"
    assert (fake_slurm / "next").read_text() == "101"   # one sbatch: the second run waited for the first's job
