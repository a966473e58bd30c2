"""The process runtime: each command is a subprocess in its own process group, with a scrubbed
environment and the workspace as working directory.

It does not isolate: the agent runs as the harness's user and could read any file that user can (a key file, the
gateway process's environment in /proc). Its environment is built from nothing (scrubbed_env): no provider key
reaches it from the harness's. With network="gateway" the agent gets the gateway's 127.0.0.1 URL; "none" is not
enforced here. It exists for hosts without a Docker engine and for fast tests; `--runtime auto` warns when it
falls back to it. The hidden test split is simply never named in its environment. In verification
(spec.start_as_root means nothing here) the launcher's child runs train.py as the harness's user too,
so it could read the test split the launcher reads: only the docker runtime keeps it out of reach.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.runtime.base import ExecResult, Runtime, RuntimeError_, Sandbox, SandboxSpec

KILL_GRACE_S = 5.0
KEPT_ENV = ("LANG", "LC_ALL", "TERM", "TZ")
SITECUSTOMIZE_DIR = Path(__file__).resolve().parents[2] / "bench" / "sitecustomize"
SHIMS_DIR = Path(__file__).resolve().parents[2] / "bench" / "shims"   # offline stand-ins: `kernels` (bench/shims)
# the agent CLIs and their node, installed on the host by `make images` (images/clis.py) from the images' npm caches
HOST_CLIS_BIN = Path(__file__).resolve().parents[2] / "images" / ".build" / "clis" / "bin"


def scrubbed_env(home: Path, cpus: int | None) -> dict[str, str]:
    """A minimal environment: the harness's Python first on PATH, then the agent CLIs where they are installed,
    bench's seeding hooks and stand-ins, nothing from the host."""
    env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
    clis = [str(HOST_CLIS_BIN)] if HOST_CLIS_BIN.is_dir() else []
    env["PATH"] = ":".join([str(Path(sys.executable).parent), *clis, "/usr/local/bin:/usr/bin:/bin"])
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(SITECUSTOMIZE_DIR), str(SHIMS_DIR)])
    if cpus:
        env["OMP_NUM_THREADS"] = str(cpus)
    return env


def stop_process_group(proc: subprocess.Popen, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after grace_s."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            if sig == signal.SIGTERM:
                os.killpg(proc.pid, signal.SIGKILL)  # children that ignored the TERM
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


class ProcessSandbox(Sandbox):
    def __init__(self, spec: SandboxSpec, cpus: int | None):
        super().__init__(spec)
        self.cpus = cpus
        self.home = spec.home or spec.workspace.parent / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self._running: subprocess.Popen | None = None

    def path(self, host_path: Path) -> str:
        return str(host_path)

    @property
    def gateway_url(self) -> str:
        if self.spec.gateway is None:
            raise RuntimeError_(f"sandbox {self.spec.name} has no gateway (network {self.spec.network!r})")
        return self.spec.gateway.tcp_url

    def exec(self, argv, log_path, timeout_s=None, env=None) -> ExecResult:
        full_env = scrubbed_env(self.home, self.cpus) | self.spec.env | (env or {})
        if self.spec.gpu_ids:
            full_env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.spec.gpu_ids))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, cwd=self.spec.workspace, env=full_env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self._running = proc
            try:
                code = proc.wait(timeout=timeout_s)
                timed_out = False
                stop_process_group(proc, grace_s=0)  # whatever the command left running in the background
            except subprocess.TimeoutExpired:
                stop_process_group(proc)
                code, timed_out = None, True
            finally:
                self._running = None
        return ExecResult(exit_code=code, timed_out=timed_out, seconds=time.monotonic() - start)

    def close(self) -> None:
        if self._running is not None:
            stop_process_group(self._running)


class ProcessRuntime(Runtime):
    """cpus: threads each command may use (OMP_NUM_THREADS), so parallel sessions share the host fairly."""

    name = "process"

    def __init__(self, cpus: int | None = None):
        self.cpus = cpus

    def open(self, spec: SandboxSpec) -> ProcessSandbox:
        return ProcessSandbox(spec, self.cpus)
