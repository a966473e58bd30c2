"""The sandbox interface shared by every runtime.

A Sandbox runs commands in one session's workspace with a given set of read-only data mounts, an environment, and
resource limits. What a sandbox can reach is decided by its spec alone: the hidden test split and provider keys are
never in an agent's spec. Its network is a mode: "none", or "gateway", where the LLM gateway is the one thing it
reaches, at Sandbox.gateway_url (docker: the gateway's Unix socket, mounted, behind a loopback forwarder; process
runtime: the gateway's 127.0.0.1 port). A verification spec names the test split and sets start_as_root, so that
the launcher can keep it from the train.py it runs (docker only: the process runtime runs everything as the
harness's user and isolates nothing).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

NetworkMode = Literal["none", "gateway"]


class RuntimeError_(RuntimeError):
    """A runtime that cannot start or run a sandbox (engine down, image missing, ...)."""


@dataclass(frozen=True)
class Mount:
    source: Path          # on the host
    target: str           # where the sandbox sees it (the docker runtime; the process runtime uses source)
    read_only: bool = True


@dataclass(frozen=True)
class GatewayAddress:
    """Where the LLM gateway listens on the host (harness/gateway): never a key, only a place."""
    socket_path: Path     # its agents' Unix socket: docker mounts the folder, which holds nothing else
    tcp_url: str          # http://127.0.0.1:PORT: the process runtime's agents use it as it is


@dataclass(frozen=True)
class SandboxSpec:
    name: str
    workspace: Path                           # read-write; the working directory of every command
    home: Path | None = None                  # read-write, kept across commands: $HOME (an agent CLI's own state,
                                              # e.g. the conversation it resumes); None: a throwaway one
    mounts: tuple[Mount, ...] = ()
    env: dict[str, str] = field(default_factory=dict)   # values may name paths from Sandbox.path()
    gpu_ids: tuple[int, ...] = ()
    cpus: float | None = None
    memory_gb: float | None = None
    network: NetworkMode = "none"             # agents never get a network; "gateway": the gateway and nothing else
    gateway: GatewayAddress | None = None     # with network="gateway" only
    start_as_root: bool = False               # trusted commands only (bench.launch in verification): docker starts
                                              # them as root, able only to drop to the agent user (see docker.py)


    def __post_init__(self):
        if (self.network == "gateway") != (self.gateway is not None):
            raise ValueError(f"sandbox {self.name}: network {self.network!r} with gateway {self.gateway}: "
                             "a gateway address goes with network='gateway', and only with it")


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

    @property
    @abc.abstractmethod
    def gateway_url(self) -> str:
        """The LLM gateway's URL as commands in this sandbox reach it (spec.network == "gateway")."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop everything still running and release the sandbox; idempotent. Called from another thread while
        exec runs, it stops the command (exec then returns)."""

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
