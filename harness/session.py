"""One agent session: fresh workspace, the agent in a sandbox until its budget, then collection.

Stages write to the session folder (layout in harness/store.py) as they finish, so a kill at any
point leaves every finished stage on disk. A finished session (done, or the agent's own error) is never
run again; one found unfinished, or ended by an infrastructure failure, is set aside (renamed, not
deleted) and run afresh. A session whose sandbox failed still has its results.tsv rows collected.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from agents.registry import get_agent
from bench.contracts import LEDGER_SOCKET_ENV, SEED_ENV
from bench.profile import Profile
from harness.collect import collect
from harness.config import Budget
from harness.data import DATA_TARGET, DataPaths
from harness.integrity import check_integrity
from harness.ledger import LedgerService
from harness.provenance import project_revision
from harness.runtime.base import Mount, Runtime, SandboxSpec
from harness.store import SCHEMA_VERSION, read_json, write_json
from harness.workspace import git, make_workspace, sha256_bytes

SessionStatus = Literal["running", "done", "agent_error", "infra_error"]
FINAL_STATUSES = ("done", "agent_error")   # infra_error is redone on resume
LEDGER_TARGET = "/ledger"               # the run ledger's socket folder, read-only; its records are never mounted


@dataclass(frozen=True)
class SessionSpec:
    run_id: str
    agent: str
    repeat: int
    seed: int
    profile: Profile
    source: str
    budget: Budget

    @property
    def session_id(self) -> str:
        return f"{self.agent}-r{self.repeat}"


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    run_id: str
    agent: str
    repeat: int
    seed: int
    profile: str
    profile_hash: str
    source: str
    runtime: str
    budget_seconds: float
    budget_experiments: int
    status: SessionStatus
    stage: str
    message: str
    started_at: float
    ended_at: float | None = None
    wall_seconds: float | None = None
    n_experiments: int = 0
    gpu: int | None = None
    baseline_commit: str = ""
    final_commit: str = ""
    schema_version: int = SCHEMA_VERSION


def run_session(spec: SessionSpec, run_dir: Path, runtime: Runtime, data: DataPaths,
                gpu: int | None = None) -> SessionRecord:
    """Run (or resume) one session; gpu is the one GPU it gets, None on a CPU host."""
    folder = run_dir / "sessions" / spec.session_id
    previous = read_json(folder / "session.json")
    if previous and previous["status"] in FINAL_STATUSES:
        return SessionRecord(**previous)
    if folder.exists():
        _set_aside(folder)
    folder.mkdir(parents=True)
    record = SessionRecord(
        session_id=spec.session_id, run_id=spec.run_id, agent=spec.agent, repeat=spec.repeat, seed=spec.seed,
        profile=spec.profile.name, profile_hash=spec.profile.hash, source=spec.source, runtime=runtime.name,
        budget_seconds=spec.budget.seconds, budget_experiments=spec.budget.experiments,
        status="running", stage="workspace", message="", started_at=time.time(), gpu=gpu)
    write_json(folder / "session.json", record)
    try:
        record = _run_stages(spec, folder, runtime, data, record, gpu)
    except Exception as e:  # recorded, never raised through: the other sessions go on
        record = SessionRecord(**read_json(folder / "session.json"))   # as far as the stages got
        record = replace(record, status="infra_error", message=f"{record.stage}: {type(e).__name__}: {e}")
        if record.stage == "agent":  # the sandbox broke: what the agent wrote so far is still collected
            try:
                record = replace(record, n_experiments=_collect(folder))
            except Exception as again:
                record = replace(record, message=f"{record.message}; collect: {type(again).__name__}: {again}")
    record = replace(record, ended_at=time.time(), wall_seconds=time.time() - record.started_at)
    write_json(folder / "session.json", record)
    return record


def _run_stages(spec, folder, runtime, data, record, gpu) -> SessionRecord:
    workspace, ledger = folder / "workspace", folder / "ledger"
    baseline = make_workspace(workspace, spec.profile, tag=f"{spec.run_id}-{spec.session_id}")
    adapter = get_agent(spec.agent)
    write_json(folder / "manifest.json", {
        "schema_version": SCHEMA_VERSION, "profile": spec.profile.name, "profile_hash": spec.profile.hash,
        "source": spec.source, "data_manifest_sha256": sha256_bytes((data.data_dir / "manifest.json").read_bytes()),
        "baseline_commit": baseline.commit, "baseline_files": baseline.files,
        "agent": adapter.describe(), "runtime": runtime.describe(), "host": platform.node(),
        "platform": platform.platform(), "project": project_revision()})
    record = replace(record, stage="agent", baseline_commit=baseline.commit)
    write_json(folder / "session.json", record)

    with LedgerService(workspace, ledger) as service, \
            runtime.open(agent_sandbox(spec, folder, data, gpu, service.socket_dir)) as sandbox:
        env = {"ARBENCH_DATA_DIR": sandbox.path(data.data_dir), LEDGER_SOCKET_ENV: sandbox.path(service.socket_path),
               SEED_ENV: str(spec.seed)}
        result = sandbox.exec(adapter.command(spec.budget.experiments, spec.seed), folder / "agent.log",
                              timeout_s=spec.budget.seconds, env=env)
    status, message = _agent_outcome(result, folder / "agent.log")

    record = replace(record, stage="collect", status="running", message=message)
    write_json(folder / "session.json", record)
    n_experiments = _collect(folder)
    if status == "infra_error":
        return replace(record, status=status, n_experiments=n_experiments)
    return replace(record, stage="done", status=status, n_experiments=n_experiments,
                   final_commit=git(workspace, "rev-parse", "HEAD"))


def _collect(folder: Path) -> int:
    """Experiments and integrity findings from the workspace as the agent left it; the number of experiments."""
    baseline_files = read_json(folder / "manifest.json")["baseline_files"]
    workspace, ledger = folder / "workspace", folder / "ledger"
    experiments = collect(workspace, ledger)
    write_json(folder / "experiments.json", experiments)
    write_json(folder / "findings.json", check_integrity(workspace, baseline_files, experiments, ledger))
    return len(experiments)


def agent_sandbox(spec: SessionSpec, folder: Path, data: DataPaths, gpu: int | None,
                  ledger_socket_dir: Path) -> SandboxSpec:
    """What the agent may touch: its workspace, train+val data and the run ledger's socket read-only, its one GPU;
    no test split, no ledger records."""
    mounts = (Mount(data.data_dir, DATA_TARGET), Mount(ledger_socket_dir, LEDGER_TARGET))
    return SandboxSpec(name=f"arbench-{spec.run_id}-{spec.session_id}", workspace=folder / "workspace",
                       mounts=mounts, gpu_ids=() if gpu is None else (gpu,))


def _agent_outcome(result, log_path: Path) -> tuple[SessionStatus, str]:
    if result.failure:
        return "infra_error", f"sandbox failed after {result.seconds:.0f} s: {result.failure}"
    if result.timed_out:
        return "done", f"stopped at the budget after {result.seconds:.0f} s"
    if result.exit_code == 0:
        return "done", f"agent finished after {result.seconds:.0f} s"
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
    return "agent_error", f"agent exited with code {result.exit_code}: {' '.join(tail)[:300]}"


def _set_aside(folder: Path) -> None:
    n = 1
    while folder.with_name(f"{folder.name}.interrupted-{n}").exists():
        n += 1
    folder.rename(folder.with_name(f"{folder.name}.interrupted-{n}"))
