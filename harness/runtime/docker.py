"""The docker runtime: each exec runs in a fresh container of the pinned image; a sandbox's containers
serve its session only.

What a container gets: the workspace read-write at /workspace, the spec's home (if any) read-write at /home/agent,
the spec's mounts at their targets, no network
(`--network none`, whatever spec.network says), exactly the GPUs in spec.gpu_ids, CPU and memory limits, no
capabilities, no variable of the harness's environment (provider keys included), a non-root user (the image's `agent`
when the harness runs as root; the workspace and read-write mounts are handed to it for the exec and back afterwards).
A trusted command (spec.start_as_root, the launcher in verification) starts as root instead, with only the
capabilities it needs to run train.py as `agent` (DROP_CAPABILITIES; $ARBENCH_CHILD_USER names the user): root without
CAP_DAC_OVERRIDE reads what it owns (the held-out split, 0700, and the workspace, which stay the harness's: the same
uid, no user namespace), and the agent user cannot. When the harness is not root, every container runs as the
harness's user and no drop is possible. The budget is enforced from outside (SIGTERM, then SIGKILL after a grace); the
log streams to the host while the command runs and is kept however the container ends. With spec.network == "gateway",
the LLM gateway's socket folder is mounted read-only at GATEWAY_DIR and the command starts behind bench/forward.py,
which relays 127.0.0.1:FORWARD_PORT to that socket: the container reaches the gateway at gateway_url, and no other
address. Not covered here: building the images (images/build.py).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import docker
import requests
from docker.types import DeviceRequest, LogConfig
from docker.types import Mount as DockerMount

from bench.launch import CHILD_USER_ENV
from harness.runtime.base import ExecResult, Runtime, RuntimeError_, Sandbox, SandboxSpec
from harness.runtime.images import (IMAGE_PROJECT_DIR, IMAGES, LABEL, PROJECT_PARTS, PROJECT_ROOT, host_flavors,
                                    project_hash)
from harness.runtime.process import KILL_GRACE_S

AGENT_USER, AGENT_UID, AGENT_HOME = "agent", 1000, "/home/agent"
GATEWAY_DIR = "/run/arbench"       # the gateway's socket folder, read-only (network="gateway")
FORWARD_PORT = 8765                # bench/forward.py's loopback port in the container: the agent's gateway URL
DROP_CAPABILITIES = ("SETUID", "SETGID", "KILL")   # start train.py as the agent, and signal it (a root without them)
ENGINE_TIMEOUT_S = 30
# what describe() reports from the image's labels (set by images/build.py)
DESCRIBED_LABELS = {"lock_sha256": "lock-sha256", "source_sha256": "source", "base_image": "base",
                    "base_packages_sha256": "base-packages", "agent_clis": "agent-clis"}


def connect(timeout: float = ENGINE_TIMEOUT_S) -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise RuntimeError_(f"no Docker engine answers ({e}); start dockerd or use --runtime process") from e


def docker_available() -> bool:
    try:
        connect(timeout=5).close()
        return True
    except RuntimeError_:
        return False


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(parent, name), uid, gid)


class DockerSandbox(Sandbox):
    def __init__(self, spec: SandboxSpec, client: docker.DockerClient, image_id: str, default_cpus: float | None):
        super().__init__(spec)
        self.client, self.image_id = client, image_id
        self.cpus = spec.cpus or default_cpus
        self.as_agent = os.geteuid() == 0
        self.as_root = self.as_agent and spec.start_as_root
        self._running = None
        if spec.home is not None:
            spec.home.mkdir(parents=True, exist_ok=True)
        missing = [m.source for m in spec.mounts if not m.source.exists()]
        if missing or not spec.workspace.is_dir():
            raise RuntimeError_(f"sandbox {spec.name}: {missing[0] if missing else spec.workspace} does not exist")
        self._remove_leftovers()

    def _mapping(self) -> list[tuple[Path, str]]:
        pairs = [(self.spec.workspace, self.WORKSPACE)] + [(m.source, m.target) for m in self.spec.mounts]
        pairs += [(self.spec.home, AGENT_HOME)] if self.spec.home else []
        pairs += [(PROJECT_ROOT / part, f"{IMAGE_PROJECT_DIR}/{part}") for part in PROJECT_PARTS]
        return sorted(((Path(os.path.abspath(s)), t) for s, t in pairs), key=lambda p: -len(p[0].parts))

    def path(self, host_path: Path) -> str:
        host_path = Path(os.path.abspath(host_path))
        for source, target in self._mapping():
            if host_path.is_relative_to(source):
                return str(PurePosixPath(target) / host_path.relative_to(source))
        raise RuntimeError_(f"{host_path} is not visible in sandbox {self.spec.name}")

    @property
    def gateway_url(self) -> str:
        if self.spec.gateway is None:
            raise RuntimeError_(f"sandbox {self.spec.name} has no gateway (network {self.spec.network!r})")
        return f"http://127.0.0.1:{FORWARD_PORT}"

    def container_config(self, argv: list[str], env: dict[str, str] | None = None) -> dict:
        """Keyword arguments of containers.create for one exec: everything the container may reach."""
        spec = self.spec
        user, home = (("0:0", "/root") if self.as_root else (AGENT_USER, AGENT_HOME) if self.as_agent
                      else (f"{os.geteuid()}:{os.getegid()}", AGENT_HOME if spec.home else "/tmp"))
        full_env = {"HOME": home, "PYTHONUNBUFFERED": "1"} | spec.env | (env or {})
        if self.as_root:
            full_env[CHILD_USER_ENV] = AGENT_USER
        if self.cpus:
            full_env.setdefault("OMP_NUM_THREADS", str(max(1, int(self.cpus))))
        mounts = [DockerMount(self.WORKSPACE, str(spec.workspace.absolute()), type="bind", read_only=False)]
        mounts += [DockerMount(m.target, str(m.source.absolute()), type="bind", read_only=m.read_only)
                   for m in spec.mounts]
        if spec.home is not None:
            mounts.append(DockerMount(AGENT_HOME, str(spec.home.absolute()), type="bind", read_only=False))
        if spec.gateway is not None:
            mounts.append(DockerMount(GATEWAY_DIR, str(spec.gateway.socket_path.parent), type="bind", read_only=True))
            argv = ["python", "-m", "bench.forward", "--listen", f"127.0.0.1:{FORWARD_PORT}",
                    "--socket", f"{GATEWAY_DIR}/{spec.gateway.socket_path.name}", "--", *argv]
        memory = f"{int(spec.memory_gb * 1024)}m" if spec.memory_gb else None
        return dict(
            image=self.image_id, command=argv, environment=full_env, working_dir=self.WORKSPACE,
            name=f"arbench-{re.sub(r'[^a-zA-Z0-9_.-]', '-', spec.name)}-{secrets.token_hex(4)}",
            labels={f"{LABEL}.sandbox": spec.name},
            user=user, cap_add=list(DROP_CAPABILITIES) if self.as_root else None,
            mounts=mounts, network_mode="none",
            device_requests=[DeviceRequest(device_ids=[str(i) for i in spec.gpu_ids], capabilities=[["gpu"]])]
            if spec.gpu_ids else None,
            nano_cpus=int(self.cpus * 1e9) if self.cpus else None, mem_limit=memory, memswap_limit=memory,
            init=True, cap_drop=["ALL"], security_opt=["no-new-privileges"], pids_limit=4096, shm_size="1g",
            log_config=LogConfig(type="json-file"))

    def exec(self, argv, log_path, timeout_s=None, env=None) -> ExecResult:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with self._handed_to_agent(), engine_errors(self.spec.name):
            container = self.client.containers.create(**self.container_config(argv, env))
            self._running = container
            try:
                container.start()
                follower = threading.Thread(target=_follow_log, args=(container, log_path), daemon=True)
                follower.start()
                code, timed_out = _wait(container, start, timeout_s)
                follower.join(timeout=ENGINE_TIMEOUT_S)
                failure = _note_how_it_ended(container, log_path, timed_out, timeout_s)
            finally:
                self._running = None
                container.remove(force=True)
        return ExecResult(exit_code=code, timed_out=timed_out, seconds=time.monotonic() - start, failure=failure)

    @contextmanager
    def _handed_to_agent(self):
        """Root on the host: the agent user owns what it may write during the exec, the host owner after."""
        if not self.as_agent or self.as_root:   # the container runs as the workspace's owner: nothing to hand over
            yield
            return
        writable = [self.spec.workspace, *([self.spec.home] if self.spec.home else [])] + \
            [m.source for m in self.spec.mounts if not m.read_only]
        owners = [(p, p.stat().st_uid, p.stat().st_gid) for p in writable if p.is_dir()]
        for path, _, _ in owners:
            chown_tree(path, AGENT_UID, AGENT_UID)
        try:
            yield
        finally:
            for path, uid, gid in owners:
                chown_tree(path, uid, gid)

    def _remove_leftovers(self) -> None:
        """Containers of this sandbox's name left by a harness that was killed (resume)."""
        with engine_errors(self.spec.name):
            for c in self.client.containers.list(all=True, filters={"label": f"{LABEL}.sandbox={self.spec.name}"}):
                c.remove(force=True)

    def close(self) -> None:
        container = self._running
        if container is not None:
            try:
                container.stop(timeout=int(KILL_GRACE_S))
            except docker.errors.NotFound:
                pass


@contextmanager
def engine_errors(name: str):
    try:
        yield
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise RuntimeError_(f"sandbox {name}: docker engine: {e}") from e


def _wait(container, start: float, timeout_s: float | None) -> tuple[int | None, bool]:
    """(exit code, timed out); past timeout_s the container is stopped: SIGTERM, then SIGKILL."""
    remaining = None if timeout_s is None else max(0.01, timeout_s - (time.monotonic() - start))
    try:
        return container.wait(timeout=remaining)["StatusCode"], False
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
        if remaining is None or time.monotonic() - start < timeout_s:
            raise
    container.stop(timeout=int(KILL_GRACE_S))
    container.wait(timeout=ENGINE_TIMEOUT_S)
    return None, True


def _note_how_it_ended(container, log_path: Path, timed_out: bool, timeout_s: float | None) -> str | None:
    """A last log line when the container did not end by itself, so the record says why.
    Returns the failure (out of memory, killed from outside), None after a normal end or the time limit."""
    container.reload()
    failure = None
    if timed_out:
        note = f"stopped at its time limit of {timeout_s:.0f} s"
    elif container.attrs["State"].get("OOMKilled"):
        note = failure = (f"killed: out of memory (container limit "
                          f"{container.attrs['HostConfig']['Memory'] / 2**30:.2f} GiB)")
    elif container.attrs["State"]["ExitCode"] == 137:
        note = failure = "killed (SIGKILL) from outside the command"
    else:
        return None
    with open(log_path, "a") as log:
        log.write(f"\n[arbench] container {note}\n")
    return failure


def _follow_log(container, log_path: Path) -> None:
    with open(log_path, "ab") as log:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            log.write(chunk)
            log.flush()


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(self, image: str | None = None, cpus: float | None = None):
        image = image or IMAGES[host_flavors()[-1]]
        self.client, self.tag, self.cpus = connect(), image, cpus
        try:
            self.image = self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise RuntimeError_(f"docker image {image} not found; build it with: make images") from None
        built_from = self.image.labels.get(f"{LABEL}.source")
        if built_from != project_hash():
            raise RuntimeError_(f"docker image {image} holds other code ({built_from}) than this checkout "
                                f"({project_hash()}); rebuild it with: make images")

    def open(self, spec: SandboxSpec) -> DockerSandbox:
        return DockerSandbox(spec, self.client, self.image.id, self.cpus)

    def describe(self) -> dict[str, str]:
        labels = {key: self.image.labels.get(f"{LABEL}.{label}", "") for key, label in DESCRIBED_LABELS.items()}
        return {"runtime": self.name, "image": self.tag, "image_id": self.image.id,
                "image_digest": (self.image.attrs.get("RepoDigests") or [""])[0], **labels,
                "engine_version": self.client.version().get("Version", "")}
