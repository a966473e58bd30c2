"""The run ledger: a host-side service that records each `python train.py` of one session where the agent cannot write.

bench's sitecustomize, in the run's own process and before any train.py code runs, connects to a Unix socket in a
host folder that the sandbox sees read-only (docker: a bind mount; process runtime: the host path), waits for the
service's answer, and later reports what evaluate_bpb returned and how the run ended. The service believes only
what it measures on the host:
  pid        the peer's, from SO_PEERCRED (the kernel translates it into the host's pid namespace)
  process    /proc/<pid>: a python whose script argument is train.py, and that script, reached through the
             process's own cwd or root, is the file workspace/train.py (same device and inode)
  files      sha256 of train.py, prepare.py (the file `import prepare` would load from the workspace) and
             profile.toml, git HEAD and whether train.py differs from HEAD's: read from the host's workspace at
             connect, before Python has read train.py (the client waits for the answer)
  times      started_at: connect; ended_at: when /proc says the process is gone (or a zombie), host clock
Anything else that connects (`python -c`, a train.py other than the workspace's, a second connection from a process
that already has a run) is recorded with forged=true and a reason. What the client says (evaluate_bpb's return
values, exit code, status, printed summary) is kept under "client" as its word, never as a measurement.
Every SCAN_INTERVAL_S /proc is scanned for python processes running the workspace's train.py; one that never
connected (`python -I train.py`, the variable or PYTHONPATH removed) gets a record with observed_only=true.
Records go to a host folder the sandbox never sees, one JSON per run (bench.contracts.LedgerRecord), each write
atomic.

Not covered: code inside a real train.py process speaks with the client's voice (it can send a faked evaluate_bpb
value or exit code); the trusted verifier's re-training answers that. A run that never connects and lasts less than
the scan interval can be missed. The process runtime does not isolate: its agent runs as the harness's user and
could write the records folder directly; the defence holds in the docker runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from importlib.machinery import (BYTECODE_SUFFIXES, EXTENSION_SUFFIXES, SOURCE_SUFFIXES, ExtensionFileLoader,
                                 FileFinder, SourceFileLoader, SourcelessFileLoader)
from pathlib import Path

from bench.contracts import LEDGER_ACK, LedgerRecord, refusal_answer
from harness.store import write_json
from harness.workspace import sha256_bytes

SOCKET_NAME = "ledger.sock"
SCAN_INTERVAL_S = 0.5         # /proc scan for runs that never connected
POLL_S = 0.05                 # how often a run whose socket closed is checked for being gone
MAX_MESSAGE = 1 << 20         # bytes; sitecustomize's messages are far smaller
GIT_TIMEOUT_S = 10.0
PYTHON_OPTIONS_WITH_VALUE = ("-W", "-X", "-Q")


class LedgerService:
    """with LedgerService(workspace, records_dir) as ledger: mount ledger.socket_dir read-only, set
    bench.contracts.LEDGER_SOCKET_ENV to the sandbox's path of ledger.socket_path; on leaving, every record is
    final.

    max_runs (0: no cap) is the session's experiment cap: the runs past it are recorded with refused=true and
    answered with a refusal (sitecustomize then exits before train.py runs), and `over_cap` is set so that the
    harness stops the session. Only real runs count (a forged connection trains nothing); a run that never
    connects is neither counted nor refused (it gets an observed_only record, which integrity flags)."""

    def __init__(self, workspace: Path, records_dir: Path, max_runs: int = 0):
        self.workspace, self.records_dir, self.max_runs = workspace, records_dir, max_runs
        self.over_cap = threading.Event()
        self.unwritable: str | None = None                   # why a record could not be written (a full disk)
        self._admitted = 0                                   # real runs let through
        # a short path of its own: a socket path has at most 107 bytes, a session folder can be deeper
        self.socket_dir = Path(tempfile.mkdtemp(prefix="arbench-ledger-"))
        self.socket_path = self.socket_dir / SOCKET_NAME
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._runs: dict[tuple[int, str | None], Path] = {}  # (pid, start ticks) -> its record, forged ones too
        self._seen: dict[tuple[int, str], float] = {}        # train.py processes found by the scan -> first seen
        self._threads: list[threading.Thread] = []
        self._count = 0

    def __enter__(self) -> LedgerService:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.socket_dir, 0o755)             # the container's agent user must reach the socket...
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o777)            # ...and connect to it; it writes nothing through the folder
        self._server.listen(64)
        self._server.settimeout(POLL_S * 4)
        for target in (self._accept, self._scan):
            self._spawn(target)
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        for thread in list(self._threads):
            thread.join(timeout=GIT_TIMEOUT_S)
        self._server.close()
        self._record_unconnected()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every connection so far has ended and its record is final (for callers that read records
        while the service runs)."""
        deadline = time.monotonic() + timeout_s
        while any(t.name == "ledger-run" and t.is_alive() for t in list(self._threads)) and time.monotonic() < deadline:
            time.sleep(POLL_S)

    def _spawn(self, target, *args, name: str = "ledger") -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn, time.time(), name="ledger-run")

    # ------------------------------------------------------------------ one connection, one record

    def _serve(self, conn: socket.socket, started_at: float) -> None:
        with conn:
            pid = peer_pid(conn)
            ticks = _start_ticks(pid)
            reason = check_process(pid, self.workspace / "train.py")
            with self._lock:
                if reason is None and (pid, ticks) in self._runs:
                    reason = f"pid {pid} already has a run: a second connection from one process"
                refused = reason is None and 0 < self.max_runs <= self._admitted
                self._admitted += reason is None and not refused
                self._count += 1
                path = self.records_dir / f"run-{int(started_at * 1000)}-{pid}-{self._count}.json"
                self._runs.setdefault((pid, ticks), path)
            record = LedgerRecord(pid=pid, cmdline=_cmdline(pid), forged=reason is not None, forged_reason=reason,
                                  observed_only=False, refused=refused, started_at=started_at,
                                  **workspace_state(self.workspace))
            refusal = f"the session's experiment cap ({self.max_runs} runs) is reached" if refused else None
            if not self._write(path, record) and not refused:   # a run the ledger cannot record never trains
                refusal = f"the run ledger cannot record this run: {self.unwritable}"
                with self._lock:
                    self._admitted -= reason is None
            if refused:
                self.over_cap.set()
            try:
                conn.sendall(refusal_answer(refusal) if refusal else LEDGER_ACK)
            except OSError:   # a client that does not wait for the answer: its record stands all the same
                pass
            for message in _messages(conn, self._stopping):
                record = replace(record, client=record.client.take(message))
                self._write(path, record)
            record = replace(record, socket_closed_at=time.time())
            record = replace(record, ended_at=self._wait_gone(pid, ticks))
            self._write(path, record)

    def _write(self, path: Path, record: LedgerRecord) -> bool:
        """Write a record; on a failure (the session's disk is full: the agent's files fill the folder the records
        share) keep serving, and say why in `unwritable`, for the session's outcome."""
        try:
            write_json(path, record.to_dict())
            return True
        except OSError as e:
            self.unwritable = f"{path.name}: {e.strerror or e}"
            return False

    def _wait_gone(self, pid: int, ticks: str | None) -> float | None:
        """Host time at which the process was seen gone; None when it outlived the service."""
        while _alive(pid, ticks):
            if self._stopping.wait(POLL_S):
                return None if _alive(pid, ticks) else time.time()
        return time.time()

    # ------------------------------------------------------------------ runs that never connected

    def _scan(self) -> None:
        train_py = self.workspace / "train.py"
        while not self._stopping.wait(SCAN_INTERVAL_S):
            for pid in _pids():
                try:
                    if b"train.py" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                        continue
                except OSError:
                    continue
                ticks = _start_ticks(pid)
                if ticks is not None and (pid, ticks) not in self._seen and check_process(pid, train_py) is None:
                    self._seen[pid, ticks] = time.time()

    def _record_unconnected(self) -> None:
        for (pid, ticks), seen_at in self._seen.items():
            if (pid, ticks) not in self._runs:
                record = LedgerRecord(pid=pid, forged=False, forged_reason=None, observed_only=True, started_at=seen_at)
                self._write(self.records_dir / f"unrecorded-{int(seen_at * 1000)}-{pid}.json", record)


def _messages(conn: socket.socket, stopping: threading.Event):
    """JSON objects, one a line, until EOF (or the service stops); lines that are not one are skipped."""
    conn.settimeout(POLL_S * 4)
    pending = b""
    while not stopping.is_set():
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return
        if not chunk:
            return
        *lines, pending = (pending + chunk).split(b"\n")
        pending = pending[-MAX_MESSAGE:]
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                yield message


# ---------------------------------------------------------------------------
# What the host sees of a process and of the workspace
# ---------------------------------------------------------------------------

def peer_pid(conn: socket.socket) -> int:
    pid, _, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid


def check_process(pid: int, train_py: Path) -> str | None:
    """Why pid is not a python running train_py (the very file); None when it is."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        args = _cmdline(pid)
    except OSError as e:
        return f"pid {pid} cannot be inspected: {e.strerror}"
    script = script_argument(args)
    if not os.path.basename(exe).startswith("python") or script is None or os.path.basename(script) != "train.py":
        return f"pid {pid} runs {' '.join(args)[:300]!r}, not `python train.py`"
    try:
        seen = os.stat(f"/proc/{pid}/root{script}" if script.startswith("/") else f"/proc/{pid}/cwd/{script}")
        ours = train_py.stat()
    except OSError as e:
        return f"pid {pid}: its train.py cannot be compared with the workspace's: {e.strerror}"
    if (seen.st_dev, seen.st_ino) != (ours.st_dev, ours.st_ino):
        return f"pid {pid} runs a train.py other than the workspace's"
    return None


def script_argument(args: list[str]) -> str | None:
    """The script of a python command line; None for -c, -m, stdin or none."""
    rest = iter(args[1:])
    for arg in rest:
        if arg in ("-c", "-m", "-"):
            return None
        if arg == "--":
            return next(rest, None)
        if arg in PYTHON_OPTIONS_WITH_VALUE:
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return None


def workspace_state(workspace: Path) -> dict:
    """HEAD, train.py differing from HEAD's, and the sha256 of the files that make a run: read on the host."""
    finder = FileFinder(str(workspace), (ExtensionFileLoader, EXTENSION_SUFFIXES),
                        (SourceFileLoader, SOURCE_SUFFIXES), (SourcelessFileLoader, BYTECODE_SUFFIXES))
    spec = finder.find_spec("prepare")  # also a prepare/ package or a lone .pyc that shadows prepare.py
    prepare = Path(spec.origin) if spec is not None and spec.has_location else None
    hashes = {"train.py": _sha256_file(workspace / "train.py"), "prepare.py": _sha256_file(prepare),
              "profile.toml": _sha256_file(workspace / "profile.toml")}
    head = (_git(workspace, "rev-parse", "--verify", "-q", "HEAD") or b"").decode().strip() or None
    committed = _git(workspace, "cat-file", "blob", f"{head}:train.py") if head else None
    dirty = None if head is None else committed is None or sha256_bytes(committed) != hashes["train.py"]
    return {"head_commit": head, "dirty": dirty, "sha256": hashes}


def _git(workspace: Path, *args: str) -> bytes | None:
    """Plumbing only (no hooks, no fsmonitor): the repository is the agent's. None when git fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    command = ["git", "-c", "safe.directory=*", "-c", "core.fsmonitor=false", "-C", str(workspace), *args]
    try:
        result = subprocess.run(command, capture_output=True, env=env, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def _sha256_file(path: Path | None) -> str | None:
    try:
        return sha256_bytes(path.read_bytes()) if path is not None else None
    except OSError:
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks: with the pid, it names one process even after the pid is reused."""
    stat = _stat(pid)
    return stat[1] if stat else None


def _stat(pid: int) -> tuple[str, str] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]   # state, starttime


def _alive(pid: int, ticks: str | None) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == ticks


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]
