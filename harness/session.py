"""One agent session: fresh workspace, the agent in a sandbox until it exits or a budget stops it, then collection.

Stages write to the session folder (layout in harness/store.py) as they finish, so a kill at any
point leaves every finished stage on disk. A finished session (done, or the agent's own error) is never
run again; one found unfinished, or ended by an infrastructure failure, is set aside (moved to
<id>.interrupted-<n>, never deleted) and run afresh. A session whose sandbox failed still has its results.tsv rows
collected.

The harness enforces the budgets (harness/budget.py): the sandbox's timeout, the run ledger's experiment cap, the
LLM gateway's dollar and token caps (an agent that uses the gateway gets a gateway session of its own: a token, the
gateway's URL as its sandbox reaches it, and nothing else of the network). session.json records why the session
ended (end_reason) and the gateway's usage totals.
"""

from __future__ import annotations

import errno
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from agents.base import AGENT_LOG, Agent, AgentSpec, Start, get_agent
from bench.contracts import LEDGER_SOCKET_ENV, SEED_ENV
from bench.profile import Profile
from harness.budget import BudgetWatch, EndReason, Stop, stop_for
from harness.collect import collect
from harness.config import Budget
from harness.data import DATA_TARGET, DataPaths
from harness.gateway.client import Gateway, SessionGrant
from harness.gateway.usage import GatewayBudget, Usage
from harness.integrity import check_integrity
from harness.lease import LEASE_FILE
from harness.ledger import LedgerService
from harness.provenance import project_revision
from harness.runtime.base import ExecResult, GatewayAddress, Mount, Runtime, Sandbox, SandboxSpec
from harness.store import SCHEMA_VERSION, read_json, write_json
from harness.transcript import write_transcript
from harness.workspace import git, make_workspace, sha256_bytes

SessionStatus = Literal["running", "done", "agent_error", "infra_error"]
FINAL_STATUSES = ("done", "agent_error")   # infra_error is redone on resume
LEDGER_TARGET = "/ledger"               # the run ledger's socket folder, read-only; its records are never mounted
RESERVE = ".reserve"                  # ballast written at the start, deleted on a failure: on a full disk it frees the
RESERVE_BYTES = 4 << 20                 # room to record how the session ended
AGENT_SHARE_OF_FULL_DISK = 0.5          # a full disk is the agent's failure when its files hold this much of it
MAX_RESUMES = 50                        # continues of an agent that keeps stopping early, per session
MIN_RESUME_S = 10.0                     # less budget left than this: not worth another start
USAGE_FIELDS = ("requests", "retries", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                "dollars")              # the gateway's totals a session record keeps, by Usage's names


@dataclass(frozen=True)
class SessionSpec:
    run_id: str
    agent: AgentSpec
    repeat: int
    seed: int
    profile: Profile
    source: str
    budget: Budget

    @property
    def session_id(self) -> str:
        return f"{self.agent.name}-r{self.repeat}"


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    run_id: str
    agent: str                 # the run config's row name
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
    budget_dollars: float | None = None
    budget_tokens: int | None = None
    end_reason: EndReason | None = None   # None until the agent's stage ended
    requests: int = 0                     # the LLM gateway's totals (USAGE_FIELDS); zeros without the gateway
    retries: int = 0
    input_tokens: int = 0                 # uncached input
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    dollars: float = 0.0
    resumes: int = 0                      # times the harness continued an agent that stopped before its budget
    infra_retries: int = 0                # earlier attempts lost to the infrastructure (set aside as .interrupted-<n>)
    schema_version: int = SCHEMA_VERSION


def run_session(spec: SessionSpec, run_dir: Path, runtime: Runtime, data: DataPaths,
                gpu: int | None = None, gateway: Gateway | None = None) -> SessionRecord:
    """Run (or resume) one session; gpu is the one GPU it gets, None on a CPU host; gateway, the run's LLM gateway
    (needed by an agent that uses it)."""
    folder = run_dir / "sessions" / spec.session_id
    previous = read_json(folder / "session.json")
    if previous and previous["status"] in FINAL_STATUSES:
        return SessionRecord(**previous)
    set_aside(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESERVE).write_bytes(bytes(RESERVE_BYTES))
    record = new_record(spec, runtime.name, folder, gpu)
    write_json(folder / "session.json", record)
    try:
        record = _run_stages(spec, folder, runtime, data, record, gpu, gateway)
    except Exception as e:  # recorded, never raised through: the other sessions go on
        record = SessionRecord(**read_json(folder / "session.json"))   # as far as the stages got
        (folder / RESERVE).unlink(missing_ok=True)   # on a full disk: room for the records below
        record = replace(record, **_usage_totals(folder), **_failure(folder, record.stage, e))
        if record.stage == "agent":  # the sandbox broke: what the agent wrote so far is still collected
            try:
                record = replace(record, n_experiments=_collect(folder))
            except Exception as again:
                record = replace(record, message=f"{record.message}; collect: {type(again).__name__}: {again}")
    (folder / RESERVE).unlink(missing_ok=True)
    record = replace(record, ended_at=time.time(), wall_seconds=time.time() - record.started_at)
    write_json(folder / "session.json", record)
    return record


def _failure(folder: Path, stage: str, error: Exception) -> dict:
    """Status, end reason and message of a session its stages could not finish: the infrastructure's failure,
    unless the disk is full and the agent's own files fill most of it (then the agent's: it wrote them)."""
    message = f"{stage}: {type(error).__name__}: {error}"
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        written = sum(_bytes_under(folder / name) for name in ("workspace", "home"))
        usage = shutil.disk_usage(folder)
        if written >= AGENT_SHARE_OF_FULL_DISK * usage.used:
            return {"status": "agent_error", "end_reason": "disk_full",
                    "message": f"disk full: the agent's files ({written / 2**20:.0f} MiB in its workspace and home) "
                               f"filled the disk of its session folder ({usage.total / 2**20:.0f} MiB); {message}"}
    return {"status": "infra_error", "end_reason": "infra_error", "message": message}


def _bytes_under(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def new_record(spec: SessionSpec, runtime: str, folder: Path, gpu: int | None) -> SessionRecord:
    """The record of a session starting now in folder (its earlier attempts set aside beside it)."""
    return SessionRecord(
        session_id=spec.session_id, run_id=spec.run_id, agent=spec.agent.name, repeat=spec.repeat, seed=spec.seed,
        profile=spec.profile.name, profile_hash=spec.profile.hash, source=spec.source, runtime=runtime,
        budget_seconds=spec.budget.seconds, budget_experiments=spec.budget.experiments,
        budget_dollars=spec.budget.dollars, budget_tokens=spec.budget.tokens,
        status="running", stage="workspace", message="", started_at=time.time(), gpu=gpu,
        infra_retries=len(_set_aside_attempts(folder)))


def _run_stages(spec, folder, runtime, data, record, gpu, gateway) -> SessionRecord:
    workspace = folder / "workspace"
    baseline = make_workspace(workspace, spec.profile, tag=f"{spec.run_id}-{spec.session_id}")
    agent = get_agent(spec.agent)
    write_json(folder / "manifest.json", {
        "schema_version": SCHEMA_VERSION, "profile": spec.profile.name, "profile_hash": spec.profile.hash,
        "source": spec.source, "data_manifest_sha256": sha256_bytes((data.data_dir / "manifest.json").read_bytes()),
        "baseline_commit": baseline.commit, "baseline_files": baseline.files,
        "agent": agent.describe(), "runtime": runtime.describe(), "host": platform.node(),
        "platform": platform.platform(), "project": project_revision()})
    record = replace(record, stage="agent", baseline_commit=baseline.commit)
    write_json(folder / "session.json", record)

    result, resumes, watched, after = _run_agent(spec, folder, runtime, data, gpu, agent, gateway)
    status, end_reason, message = _agent_outcome(result, watched, after, folder / AGENT_LOG)
    if resumes:
        message += f"; continued {resumes} time{'s' * (resumes > 1)} after it stopped early"
    missing = [name for name in agent.leaves if not (folder / name).exists()]
    if missing:
        message += f"; it left no {', '.join(missing)}"

    record = replace(record, stage="collect", status="running", end_reason=end_reason, message=message,
                     resumes=resumes, **_usage_totals(folder))
    write_json(folder / "session.json", record)
    n_experiments = _collect(folder)
    if status == "infra_error":
        return replace(record, status=status, n_experiments=n_experiments)
    return replace(record, stage="done", status=status, n_experiments=n_experiments,
                   final_commit=git(workspace, "rev-parse", "HEAD"))


def _run_agent(spec: SessionSpec, folder: Path, runtime: Runtime, data: DataPaths, gpu: int | None, agent: Agent,
               gateway: Gateway | None) -> tuple[ExecResult, int, Stop | None, Stop | None]:
    """The agent in its sandbox until it exits for good, its time is up or BudgetWatch stops it. Returns the
    sandbox's last result (its seconds: the whole stage), the times it was continued, the stop BudgetWatch made, and
    the cap or outage found once the agent had ended (one it exited on)."""
    if agent.uses_gateway and gateway is None:
        raise RuntimeError(f"agent {agent.name} uses the LLM gateway and none was started for this run")
    grant = gateway.open_session(spec.session_id, folder, GatewayBudget(spec.budget.dollars, spec.budget.tokens)) \
        if agent.uses_gateway else None
    usage = None
    try:
        with LedgerService(folder / "workspace", folder / "ledger", spec.budget.experiments) as service, \
                runtime.open(agent_sandbox(spec, folder, data, gpu, service.socket_dir, grant)) as sandbox:
            start = Start(seed=spec.seed, max_experiments=spec.budget.experiments,
                          gateway_url=sandbox.gateway_url if grant else None, token=grant.token if grant else None)
            env = {"ARBENCH_DATA_DIR": sandbox.path(data.data_dir),
                   LEDGER_SOCKET_ENV: sandbox.path(service.socket_path), SEED_ENV: str(spec.seed)} | agent.env(start)
            poll = (lambda: gateway.usage(spec.session_id)) if grant else None
            capped = lambda: stop_for(spec.budget, service.over_cap.is_set(), poll() if poll else None)  # noqa: E731
            with BudgetWatch(spec.budget, sandbox, service, poll, folder / AGENT_LOG) as watch:
                result, resumes = _run_until_spent(agent, start, sandbox, env, spec.budget.seconds,
                                                   folder / AGENT_LOG, lambda: watch.stop or capped(),
                                                   (lambda: poll().requests) if poll else (lambda: 0))
    finally:
        if grant is not None:   # its files are final once it is closed
            usage = gateway.close_session(spec.session_id)
    return result, resumes, watch.stop, stop_for(spec.budget, service.over_cap.is_set(), usage)


def _run_until_spent(agent: Agent, start: Start, sandbox: Sandbox, env: dict[str, str], seconds: float, log: Path,
                     stopped: Callable[[], Stop | None], requests: Callable[[], int]) -> tuple[ExecResult, int]:
    """The agent's command, then its continue_command each time it exits cleanly (code 0) with its budget not spent
    ("NEVER STOP" is an instruction, not a guarantee), at most MAX_RESUMES times. It is not continued when its last
    run asked the model nothing (a broken agent would loop) or under MIN_RESUME_S is left."""
    began = time.monotonic()
    deadline, argv, resumes = began + seconds, agent.command(start), 0
    while True:
        asked_before = requests()
        result = sandbox.exec(argv, log, timeout_s=deadline - time.monotonic(), env=env)
        result = replace(result, seconds=time.monotonic() - began)
        argv = agent.continue_command(replace(start, resume=resumes + 1))
        if argv is None or result.exit_code != 0 or stopped() is not None:
            return result, resumes
        left, asked = deadline - time.monotonic(), requests()
        why_not = ("its budget is spent" if left < MIN_RESUME_S else
                   f"it was continued {MAX_RESUMES} times already" if resumes >= MAX_RESUMES else
                   "its last run asked the model nothing" if asked == asked_before else None)
        with open(log, "a") as f:   # the request count places the continue in transcript.md
            f.write(f"\n[arbench] {time.strftime('%H:%M:%S')} " +
                    (f"not continued: {why_not}\n" if why_not else
                     f"resume {resumes + 1} after {asked} model requests: the agent exited after "
                     f"{result.seconds:.0f} s with {left:.0f} s of its budget left; continued with the continue "
                     "prompt\n"))
        if why_not:
            return result, resumes
        resumes += 1


def _usage_totals(folder: Path) -> dict:
    """The gateway's totals for the session, from its usage.json (none for an agent without the gateway)."""
    usage = read_json(folder / "usage.json")
    return {name: getattr(Usage.from_json(usage), name) for name in USAGE_FIELDS} if usage else {}


def _collect(folder: Path) -> int:
    """Experiments and integrity findings from the workspace as the agent left it, and transcript.md (an agent
    with a gateway session); the number of experiments."""
    baseline_files = read_json(folder / "manifest.json")["baseline_files"]
    workspace, ledger = folder / "workspace", folder / "ledger"
    experiments = collect(workspace, ledger)
    write_json(folder / "experiments.json", experiments)
    write_json(folder / "findings.json", check_integrity(workspace, baseline_files, experiments, ledger))
    write_transcript(folder)
    return len(experiments)


def agent_sandbox(spec: SessionSpec, folder: Path, data: DataPaths, gpu: int | None, ledger_socket_dir: Path,
                  grant: SessionGrant | None = None) -> SandboxSpec:
    """What the agent may touch: its workspace, train+val data and the run ledger's socket read-only, its one GPU,
    the LLM gateway when it has a session there; no test split, no ledger records, no provider key."""
    mounts = (Mount(data.data_dir, DATA_TARGET), Mount(ledger_socket_dir, LEDGER_TARGET))
    gateway = GatewayAddress(grant.socket_path, grant.tcp_url) if grant else None
    return SandboxSpec(name=f"arbench-{spec.run_id}-{spec.session_id}", workspace=folder / "workspace",
                       home=folder / "home", mounts=mounts, gpu_ids=() if gpu is None else (gpu,),
                       network="gateway" if gateway else "none", gateway=gateway)


def _agent_outcome(result: ExecResult, watched: Stop | None, after: Stop | None,
                   log_path: Path) -> tuple[SessionStatus, EndReason, str]:
    """Status, end reason and message: a stop the harness made first, then the sandbox's failure, the time limit, a
    cap or outage the agent exited on, and last the agent's own exit."""
    took = f"after {result.seconds:.0f} s"
    if watched is not None or (after is not None and not result.failure and not result.timed_out):
        stop = watched or after
        return ("infra_error" if stop.reason == "infra_error" else "done"), stop.reason, f"{stop.message} ({took})"
    if result.failure:
        return "infra_error", "infra_error", f"sandbox failed {took}: {result.failure}"
    if result.timed_out:
        return "done", "time", f"stopped at the time budget {took}"
    if result.exit_code == 0:
        return "done", "agent_exit", f"agent finished {took}"
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
    return "agent_error", "agent_exit", f"agent exited with code {result.exit_code}: {' '.join(tail)[:300]}"


def set_aside(folder: Path) -> None:
    """Move what an unfinished attempt left into <id>.interrupted-<n>; the lease of the job redoing it stays."""
    left = [p for p in folder.iterdir() if p.name != LEASE_FILE] if folder.exists() else []
    if not left:
        return
    aside = folder.with_name(f"{folder.name}.interrupted-{len(_set_aside_attempts(folder)) + 1}")
    aside.mkdir()
    for path in left:
        path.rename(aside / path.name)


def _set_aside_attempts(folder: Path) -> list[Path]:
    return list(folder.parent.glob(f"{folder.name}.interrupted-*"))
