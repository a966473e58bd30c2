"""Leases: which job runs a session now, so that two harnesses (two `arbench run`, a resume while Slurm jobs still
run) never run one session at once.

A job running a session holds `sessions/<id>/lease.json` (Lease): its executor's job id, host, pid and a heartbeat
rewritten every LEASE_HEARTBEAT_S. A lease is alive while its heartbeat is younger than LEASE_TTL_S and, when it is
on this host, its pid lives; a dead one (the job was killed, its node lost) may be taken over.

Claims are serialised by a kernel lock (flock) on `sessions/.<id>.lock`, a file that is never deleted nor moved:
read the lease, take it only when it is absent, dead or this job's own, write it, unlock. A kernel lock dies with its
process, so a harness killed inside the claim leaves nothing stale to break (an O_EXCL lock file would, and
breaking it races again). The lock is beside the folder, not in it, so that setting a folder aside keeps it.
On a shared filesystem across nodes this needs working flock (NFSv4, or NFSv3 with lockd; Linux maps flock onto
POSIX locks there).

Not covered: a holder stalled past LEASE_TTL_S (a stopped process, a frozen node) loses its lease to a takeover and
learns it at its next heartbeat (HeldLease.lost); what it does meanwhile is its own. Clocks of different hosts are
trusted to agree within a few seconds.
"""

from __future__ import annotations

import fcntl
import os
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from harness.store import read_json, write_json

LEASE_FILE = "lease.json"
LEASE_HEARTBEAT_S = 10.0   # how often a holder rewrites its heartbeat
LEASE_TTL_S = 60.0         # a heartbeat older than this: the holder is gone
Executor = Literal["local", "slurm"]
SessionState = Literal["done", "running", "stale", "failed_infra", "queued"]


class LeaseHeld(Exception):
    """Another job holds a live lease on the session."""


@dataclass(frozen=True)
class Lease:
    job_id: str
    executor: Executor
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    attempt: int


@dataclass
class HeldLease:
    """What hold_lease yields: the lease as last written, and `lost`, set when another job took it over."""
    folder: Path
    lease: Lease
    lost: threading.Event


def read_lease(folder: Path) -> Lease | None:
    """The session folder's lease; None when there is none or it cannot be read (then it proves no holder alive)."""
    try:
        data = read_json(folder / LEASE_FILE)
        return None if data is None else Lease(**{f.name: data[f.name] for f in fields(Lease)})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def lease_alive(lease: Lease, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if now - lease.heartbeat_at > LEASE_TTL_S:
        return False
    return lease.host != platform.node() or _pid_alive(lease.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie (killed, not yet reaped by its parent) runs nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive kernel lock on `.<name>.lock` beside folder, held for the block (also by per-node calibration)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.parent / f".{folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # closing releases the lock


def try_claim(folder: Path, job_id: str, executor: Executor, attempt: int) -> Lease | None:
    """Take the session's lease for job_id: None when another job's lease is alive; a dead one is taken over, and
    this job's own (same job_id) renewed. Creates the folder."""
    with folder_lock(folder):
        current = read_lease(folder)
        if current is not None and current.job_id != job_id and lease_alive(current):
            return None
        now = time.time()
        lease = Lease(job_id=job_id, executor=executor, host=platform.node(), pid=os.getpid(), started_at=now,
                      heartbeat_at=now, attempt=attempt)
        write_json(folder / LEASE_FILE, lease)
        return lease


def _renew(folder: Path, lease: Lease) -> Lease | None:
    """A new heartbeat on this job's lease; None (nothing written) when the lease is no longer this job's."""
    with folder_lock(folder):
        current = read_lease(folder)
        if current is None or current.job_id != lease.job_id:
            return None
        renewed = replace(lease, heartbeat_at=time.time())
        write_json(folder / LEASE_FILE, renewed)
        return renewed


def _release(folder: Path, lease: Lease) -> None:
    with folder_lock(folder):
        current = read_lease(folder)
        if current is not None and current.job_id == lease.job_id:
            (folder / LEASE_FILE).unlink()


@contextmanager
def hold_lease(folder: Path, job_id: str, executor: Executor, attempt: int,
               heartbeat_s: float = LEASE_HEARTBEAT_S) -> Iterator[HeldLease]:
    """Claim the session (LeaseHeld when another job's lease is alive), heartbeat in a daemon thread while the block
    runs, delete the lease on the way out, exceptions included."""
    lease = try_claim(folder, job_id, executor, attempt)
    if lease is None:
        raise LeaseHeld(f"{folder.name}: held by {read_lease(folder)}")
    held = HeldLease(folder, lease, threading.Event())
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            renewed = _renew(folder, held.lease)
            if renewed is None:
                held.lost.set()
                return
            held.lease = renewed

    thread = threading.Thread(target=beat, name=f"lease-{folder.name}", daemon=True)
    thread.start()
    try:
        yield held
    finally:
        stop.set()
        thread.join()
        _release(folder, held.lease)


def session_state(folder: Path, now: float | None = None) -> SessionState:
    from harness.session import FINAL_STATUSES   # here: harness.session imports the sandbox stack
    status = (read_json(folder / "session.json") or {}).get("status")
    if status in FINAL_STATUSES:
        return "done"
    lease = read_lease(folder)
    if lease is not None and lease_alive(lease, now):
        return "running"
    if status == "infra_error":
        return "failed_infra"
    return "stale" if folder.exists() else "queued"


def scan_sessions(run_dir: Path, session_ids: list[str]) -> dict[str, SessionState]:
    """Each session's state for resume: done (final status), running (a live lease), failed_infra (ended by an
    infrastructure failure, no live lease), stale (a folder without a live lease, not final) or queued (no folder)."""
    now = time.time()
    return {sid: session_state(run_dir / "sessions" / sid, now) for sid in session_ids}

