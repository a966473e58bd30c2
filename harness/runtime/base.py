"""The sandbox interface shared by every runtime.

A Sandbox runs commands in one session's workspace with a given set of read-only data mounts,
an environment, and resource limits. What a sandbox can reach is decided by its spec alone: the
hidden test split and provider keys are never in an agent's spec. A verification spec names the test
split and sets start_as_root, so that the launcher can keep it from the train.py it runs (docker only:
the process runtime runs everything as the harness's user and isolates nothing).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path


class RuntimeError_(RuntimeError):
    """A runtime that cannot start or run a sandbox (engine down, image missing, ...)."""


@dataclass(frozen=True)
class Mount:
    source: Path          # on the host
    target: str           # where the sandbox sees it (the docker runtime; the process runtime uses source)
    read_only: bool = True


@dataclass(frozen=True)
class SandboxSpec:
    name: str
    workspace: Path                           # read-write; the working directory of every command
    mounts: tuple[Mount, ...] = ()
    env: dict[str, str] = field(default_factory=dict)   # values may name paths from Sandbox.path()
    gpu_ids: tuple[int, ...] = ()
    cpus: float | None = None
    memory_gb: float | None = None
    network: bool = False                     # agents never get a network; the gateway comes as a socket
    start_as_root: bool = False               # trusted commands only (bench.launch in verification): docker starts
                                              # them as root, able only to drop to the agent user (see docker.py)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None     # None when the command was killed at its timeout
    timed_out: bool
    seconds: float
    failure: str | None = None  # why the sandbox itself ended the command (out of memory, killed from outside)


class Sandbox(abc.ABC):
    WORKSPACE = "/workspace"

    def __init__(self, spec: SandboxSpec):
        self.spec = spec

    @abc.abstractmethod
    def path(self, host_path: Path) -> str:
        """How the sandbox sees a host path: the workspace or a mount (or something below one)."""

    @abc.abstractmethod
    def exec(self, argv: list[str], log_path: Path, timeout_s: float | None = None,
             env: dict[str, str] | None = None) -> ExecResult:
        """Run argv in the workspace, stdout and stderr to log_path (on the host); stop it at timeout_s."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop everything still running and release the sandbox; idempotent."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Runtime(abc.ABC):
    name: str

    @abc.abstractmethod
    def open(self, spec: SandboxSpec) -> Sandbox:
        """Start a sandbox for spec."""

    def describe(self) -> dict[str, str]:
        """Provenance of this runtime for the session manifest (image digest, engine version, ...)."""
        return {"runtime": self.name}
