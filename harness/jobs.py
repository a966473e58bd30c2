"""Jobs: one session, or one verification pair, as plain data; run_job does one on whatever node it lands on.

A job names what its work needs (the spec, the run folder, the runtime's name), never a live object: the local
executor runs it in a thread of the harness, Slurm in a process on another node (pickled by submitit). run_job
rebuilds there what the job names: the runtime, the prepared data, its GPU (the local slot, or the Slurm
allocation), and for an agent that uses the LLM gateway a gateway of its own for its one session, so the submit
host need not stay alive. Nothing here imports torch or touches a GPU on the submit host.

A session job holds the session's lease (harness/lease.py) while it runs: a second harness, or a resubmitted job,
finds it taken and reports Skipped instead of running the session twice. Whatever fails around the session (the
runtime does not start, the data is missing on the node) is recorded on it as an infra_error, like a sandbox that
died; a pair whose runs the infrastructure failed comes back as PairFailed, for its sessions to record. A job Slurm
stops (SIGTERM: scancel, preemption, its time limit) ends the same way: the signal reaches the agent and the training
runs too, and how they exit after it is not theirs to answer for.
"""

from __future__ import annotations

import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

from agents.base import AgentSpec, get_agent
from bench.profile import Profile
from harness.calibration import ensure_calibrated
from harness.data import require_prepared
from harness.gateway.client import Gateway
from harness.lease import LeaseHeld, hold_lease, lease_alive, read_lease, session_state
from harness.runtime import get_runtime
from harness.runtime.base import Runtime, RuntimeError_
from harness.session import SessionRecord, SessionSpec, new_record, run_session, set_aside
from harness.store import read_json, write_json
from harness.verify import PairResult, Verifier, cached_pair, pair_folder

ExecutorName = Literal["local", "slurm"]
T = TypeVar("T")


@dataclass(frozen=True)
class Placement:
    """Where and how a job runs: set by the harness (run folder, runtime) and by its executor (job id, slot)."""
    run_dir: Path
    runtime: str                      # a runtime's name: "docker" or "process" (never "auto": the submit host decides)
    executor: ExecutorName
    cpus: int | None = None           # CPU cores a sandbox gets
    job_id: str = ""                  # the executor's id of the job ("" under Slurm: read from the environment)
    slot: int | None = None           # the local executor's GPU (None: a CPU share); Slurm: the allocation says


@dataclass(frozen=True)
class GatewaySetup:
    """How a session job starts its LLM gateway: provider keys from keys_file (else the node's environment), and
    for a dry run the scripted model server's URLs in place of the providers."""
    keys_file: Path | None = None
    upstreams: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionJob:
    spec: SessionSpec
    placement: Placement
    gateway: GatewaySetup = GatewaySetup()
    attempt: int = 0                  # resubmissions after the infrastructure lost an earlier job
    replaces: str = ""                # the lost job this one redoes: its lease is waited out, not refused
    calibration_runs: int = 0         # baseline trainings of a node before its first session (harness/calibration.py)

    @property
    def key(self) -> str:
        return self.spec.session_id

    @property
    def profile(self) -> Profile:
        return self.spec.profile

    @property
    def folder(self) -> Path:
        return self.placement.run_dir / "sessions" / self.key

    def settled(self) -> SessionRecord | None:
        """The session's final record when it has one (nothing to run)."""
        if session_state(self.folder) != "done":
            return None
        return SessionRecord(**read_json(self.folder / "session.json"))

    def held_elsewhere(self) -> bool:
        return session_state(self.folder) == "running"


@dataclass(frozen=True)
class PairJob:
    """One distinct (baseline, final, seed) pair of a run's verification, trained back to back on one slot."""
    profile: Profile
    source: str | None
    seeds: tuple[int, ...]
    splits: tuple[str, ...]
    baseline_py: bytes
    final_py: bytes
    seed: int
    placement: Placement
    attempt: int = 0
    replaces: str = ""

    @property
    def key(self) -> str:
        return f"pair-{self.cache_folder.parent.name}-{self.seed}"

    @property
    def cache_dir(self) -> Path:
        return self.placement.run_dir / "cache"

    @property
    def cache_folder(self) -> Path:
        return pair_folder(self.cache_dir, self.profile, self.baseline_py, self.final_py, self.seed)

    def settled(self) -> PairResult | None:
        return cached_pair(self.cache_dir, self.profile, self.baseline_py, self.final_py, self.seed)

    def held_elsewhere(self) -> bool:
        return False


Job = SessionJob | PairJob


@dataclass(frozen=True)
class Skipped:
    """The session's lease is held by another job (another harness, an earlier submission): it was not run here."""
    key: str
    holder: str


@dataclass(frozen=True)
class PairFailed:
    """A pair the infrastructure could not train (the sandbox or the launcher failed, past the verifier's retries)."""
    key: str
    message: str


JobResult = SessionRecord | Skipped | PairResult | PairFailed


def needs_redo(result: JobResult) -> bool:
    """Whether the infrastructure failed the job (redone, up to the run's max_resubmits)."""
    return isinstance(result, PairFailed) or (isinstance(result, SessionRecord) and result.status == "infra_error")


def run_job(job: Job) -> JobResult:
    """The worker: do the job here (a thread of the harness, or a Slurm job on a node)."""
    if isinstance(job, PairJob):
        return _run_pair(job)
    return _run_session(job)


def lost(job: Job, why: str) -> JobResult:
    """What a job the executor lost for good (past its resubmissions) leaves: a pair fails; a session gets an
    infra_error record (unless a live job holds it)."""
    if isinstance(job, PairJob):
        return PairFailed(job.key, why)
    try:
        with hold_lease(job.folder, f"harness-{platform.node()}-{os.getpid()}", job.placement.executor, job.attempt):
            return job.settled() or _record_infra_failure(job, why)
    except LeaseHeld:
        return Skipped(job.key, str(read_lease(job.folder)))


# ---------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------

def _run_session(job: SessionJob) -> JobResult:
    job_id = job.placement.job_id or slurm_job_id()
    try:
        with _lease(job, job_id):
            settled = job.settled()   # finished meanwhile (a job resubmitted when its first result was late)
            if settled is not None:
                return settled
            try:
                with _stopped_by_scheduler(job.placement):
                    runtime = _runtime(job.placement)
                    data = require_prepared(job.spec.profile, job.spec.source)
                    gpu = job_gpu(job.placement, job.profile.needs_gpu)
                    ensure_calibrated(job.placement.run_dir, job.profile, data, runtime, gpu, job.calibration_runs)
                    with session_gateway(job.spec.agent, job.placement.run_dir / "gateway" / job.key,
                                         job.gateway.upstreams, job.gateway.keys_file) as gateway:
                        return run_session(job.spec, job.placement.run_dir, runtime, data, gpu, gateway)
            except Terminated as e:
                return _record_stopped(job, str(e))
            except Exception as e:   # around the session, not in it: recorded on it, the run goes on
                return _record_infra_failure(job, f"{type(e).__name__}: {e}")
    except LeaseHeld:
        return Skipped(job.key, str(read_lease(job.folder)))


@contextmanager
def _lease(job: SessionJob, job_id: str) -> Iterator[None]:
    """The session's lease for job_id; a lost predecessor's (job.replaces) is waited out until it is dead."""
    held = read_lease(job.folder)
    if held is not None and held.job_id == job.replaces:
        _wait_for_holder(job.folder)
    with hold_lease(job.folder, job_id, job.placement.executor, job.attempt):
        yield


def _record_infra_failure(job: SessionJob, message: str) -> SessionRecord:
    """An infra_error record for a session whose job failed around it (under its lease); what an earlier attempt
    left is set aside first, as run_session does."""
    set_aside(job.folder)
    record = replace(new_record(job.spec, job.placement.runtime, job.folder, None), status="infra_error",
                     end_reason="infra_error", stage="setup", message=message, ended_at=time.time(), wall_seconds=0.0)
    write_json(job.folder / "session.json", record)
    return record


def _record_stopped(job: SessionJob, message: str) -> SessionRecord:
    """The session's record as far as it got, ended as an infra_error: the scheduler stopped its job (whatever the
    agent did after the signal reached it too is not the agent's failure)."""
    previous = read_json(job.folder / "session.json")
    if previous is None:
        return _record_infra_failure(job, message)
    record = SessionRecord(**previous)
    record = replace(record, status="infra_error", end_reason="infra_error", message=f"{record.stage}: {message}",
                     ended_at=time.time(), wall_seconds=time.time() - record.started_at)
    write_json(job.folder / "session.json", record)
    return record


class Terminated(BaseException):
    """The scheduler sent this job SIGTERM (scancel, preemption, its time limit). A BaseException, so that no
    `except Exception` on the way (the session's own) takes it for a failure of what was running."""


@contextmanager
def _stopped_by_scheduler(placement: Placement) -> Iterator[None]:
    """Under Slurm, SIGTERM reaches every process of the job at once, the agent's and a training run's too: whatever
    they did after it is the scheduler's doing. Raise Terminated in the worker so that the job records it as such."""
    if placement.executor != "slurm" or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated(f"stopped by Slurm (signal {signal.Signals(signum).name}: scancel, preemption or the time "
                         "limit)")
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def session_gateway(agent: AgentSpec, state_dir: Path, upstreams: dict[str, str] | None = None,
                    keys_file: Path | None = None) -> Iterator[Gateway | None]:
    """A gateway for one session when its agent uses one (else None), stopped after it (also on error); the provider
    keys reach it from keys_file or this process's environment, and only it."""
    if not get_agent(agent).uses_gateway:
        yield None
        return
    with Gateway.start(state_dir, upstreams or None, keys_file) as gateway:
        yield gateway


# ---------------------------------------------------------------------------
# Verification pairs
# ---------------------------------------------------------------------------

def _run_pair(job: PairJob) -> PairResult | PairFailed:
    """The pair, trained under a lease on its cache folder: a pair another harness is training is waited for and
    read from the cache, never trained twice at once."""
    job_id = job.placement.job_id or slurm_job_id()
    try:
        runtime = _runtime(job.placement)
        data = require_prepared(job.profile, job.source)
        verifier = _once((Verifier, job.cache_dir, job.profile.hash, job.placement.runtime, job.seeds, job.splits),
                         lambda: Verifier(job.cache_dir, job.profile, data, runtime, job.seeds, job.splits))
        while True:
            try:
                with hold_lease(job.cache_folder, job_id, job.placement.executor, job.attempt), \
                        _stopped_by_scheduler(job.placement):
                    return verifier.pair(job.baseline_py, job.final_py, job.seed,
                                         gpu=job_gpu(job.placement, job.profile.needs_gpu))
            except LeaseHeld:
                _wait_for_holder(job.cache_folder)
    except Terminated as e:   # before pair.json: the pair is trained again, nothing of it is scored
        return PairFailed(job.key, str(e))
    except Exception as e:   # the verifier's InfraError, the runtime's, a missing data folder on the node
        return PairFailed(job.key, f"{type(e).__name__}: {e}")


def _wait_for_holder(folder: Path, poll_s: float = 1.0) -> None:
    held = read_lease(folder)
    while held is not None and lease_alive(held):
        time.sleep(poll_s)
        held = read_lease(folder)


# ---------------------------------------------------------------------------
# What a node provides
# ---------------------------------------------------------------------------

_made: dict[tuple, object] = {}
_made_lock = threading.Lock()


def _once(key: tuple, make: Callable[[], T]) -> T:
    """One object per key in this process: the local executor's threads share one runtime and one Verifier (its
    limits and drift reference are the node's), as one Slurm job has its own."""
    with _made_lock:
        if key not in _made:
            _made[key] = make()
        return _made[key]   # type: ignore[return-value]


def _runtime(placement: Placement) -> Runtime:
    return _once((Runtime, placement.runtime, placement.cpus),
                 lambda: get_runtime(placement.runtime, cpus=placement.cpus))


def job_gpu(placement: Placement, needs_gpu: bool) -> int | None:
    """The job's GPU: the local slot; under Slurm the allocated one, as docker names it (a physical index:
    SLURM_STEP_GPUS / SLURM_JOB_GPUS) or as a process sees it (CUDA_VISIBLE_DEVICES, which the sandbox passes on)."""
    if placement.executor == "local" or not needs_gpu:
        return placement.slot
    names = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES") if placement.runtime == "docker" \
        else ("CUDA_VISIBLE_DEVICES",)
    for name in names:
        first = os.environ.get(name, "").split(",")[0].strip()
        if first.isdigit():
            return int(first)
    raise RuntimeError_(f"the profile needs a GPU and this Slurm job was given none (no {', '.join(names)}); "
                        "is the partition's gres configured?")


def slurm_job_id() -> str:
    """This Slurm job's id as submitit and squeue name it: <array job>_<task> for a task of an array."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", f"pid-{os.getpid()}")
