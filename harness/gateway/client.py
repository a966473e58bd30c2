"""The harness's handle on the gateway: `Gateway.start` runs `python -m harness.gateway serve` as a child process
(its own process group; its log is <state_dir>/gateway.log), waits until its admin socket answers, and then
opens, polls and closes sessions over that socket; `stop` ends it (SIGTERM, then SIGKILL after a grace).

    with Gateway.start(run_dir / "gateway") as gateway:
        grant = gateway.open_session("claude-r0", session_folder, GatewayBudget(dollars=5.0))
        env = grant.env()                          # the agent's API keys and base URLs
        ... while the agent runs: gateway.usage("claude-r0").stopped / .infra_error ...
        usage = gateway.close_session("claude-r0")

The keys reach the gateway through its environment (inherited from the harness) or keys_file; they are never
passed on its command line, and the agent gets only its session token."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.contracts import gateway_env
from harness.gateway.upstream import RetryPolicy
from harness.gateway.usage import GatewayBudget, Usage
from harness.runtime.process import stop_process_group

START_TIMEOUT_S = 30.0
ADMIN_TIMEOUT_S = 30.0
LOG_NAME = "gateway.log"


class GatewayError(RuntimeError):
    """The gateway did not start, answer or do what was asked; the message says why (with its log's tail)."""


@dataclass(frozen=True)
class SessionGrant:
    token: str            # the agent's API key for both providers
    tcp_url: str          # http://127.0.0.1:PORT on the host
    socket_path: Path     # the Unix socket to mount into a container (its folder holds nothing else)

    def env(self, base_url: str | None = None) -> dict[str, str]:
        """The variables the Anthropic and OpenAI CLIs read, pointing at base_url (default tcp_url; in a container,
        the loopback forwarder's URL)."""
        return gateway_env(base_url or self.tcp_url, self.token)


class Gateway:
    def __init__(self, process: subprocess.Popen, state_dir: Path, socket_dir: Path, tcp_url: str):
        self.process, self.state_dir, self._socket_dir, self.tcp_url = process, state_dir, socket_dir, tcp_url
        self.socket_path = socket_dir / "agents" / "gateway.sock"
        self._admin = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_dir / "admin" / "admin.sock")),
                                   base_url="http://gateway", timeout=ADMIN_TIMEOUT_S)

    @classmethod
    def start(cls, state_dir: Path, upstreams: dict[str, str] | None = None, keys_file: Path | None = None, *,
              prices: Path | None = None, retry: RetryPolicy | None = None, port: int = 0) -> Gateway:
        """upstreams: {"anthropic": URL, "openai": URL} overriding the real APIs (e.g. the scripted server)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        # a short path of its own: a socket path has at most 107 bytes, a state dir can be deeper
        socket_dir = Path(tempfile.mkdtemp(prefix="arbench-gateway-"))
        os.chmod(socket_dir, 0o755)
        (socket_dir / "agents").mkdir(mode=0o755)
        (socket_dir / "admin").mkdir(mode=0o700)
        argv = [sys.executable, "-m", "harness.gateway", "serve",
                "--socket", str(socket_dir / "agents" / "gateway.sock"),
                "--admin-socket", str(socket_dir / "admin" / "admin.sock"), "--port", str(port),
                *(retry or RetryPolicy()).argv()]
        for name, url in (upstreams or {}).items():
            argv += [f"--upstream-{name}", url]
        if keys_file is not None:
            argv += ["--keys", str(keys_file)]
        if prices is not None:
            argv += ["--prices", str(prices)]
        with open(state_dir / LOG_NAME, "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        gateway = cls(process, state_dir, socket_dir, "")
        try:
            gateway.tcp_url = gateway._wait_ready()["tcp_url"]
        except BaseException:
            gateway.stop()
            raise
        return gateway

    def _wait_ready(self) -> dict:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GatewayError(f"the gateway exited ({self.process.returncode}) at start: {self.log_tail()}")
            try:
                return self._admin.get("/health", timeout=1.0).json()
            except httpx.TransportError:
                time.sleep(0.05)
        raise GatewayError(f"the gateway did not answer within {START_TIMEOUT_S:g}s: {self.log_tail()}")

    def open_session(self, session_id: str, folder: Path, budget: GatewayBudget) -> SessionGrant:
        data = self._call("POST", "/sessions", {"session_id": session_id, "folder": str(folder.resolve()),
                                                "budget": asdict(budget)})
        return SessionGrant(data["token"], self.tcp_url, self.socket_path)

    def usage(self, session_id: str) -> Usage:
        return Usage.from_json(self._call("GET", f"/sessions/{session_id}"))

    def close_session(self, session_id: str) -> Usage:
        return Usage.from_json(self._call("POST", f"/sessions/{session_id}/close"))

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            response = self._admin.request(method, path, json=body)
        except httpx.TransportError as e:
            raise GatewayError(f"the gateway does not answer ({e}): {self.log_tail()}") from e
        if response.status_code != 200:
            raise GatewayError(f"gateway {method} {path}: {response.status_code} {response.text}")
        return response.json()

    def log_tail(self, chars: int = 2000) -> str:
        path = self.state_dir / LOG_NAME
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def stop(self) -> None:
        """Stop the process (its sessions' files are final once it has exited) and remove its sockets."""
        self._admin.close()
        stop_process_group(self.process)
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
