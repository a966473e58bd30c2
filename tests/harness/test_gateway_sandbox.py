"""The LLM gateway from inside a container (network="gateway"): reached through its mounted socket and the loopback
forwarder, and nothing else; no provider key anywhere in the container; a whole session with the gateway probe
stopped at its dollar cap. Real engine, real image, the real gateway in front of the scripted model server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import docker
import pytest

from agents.base import AgentSpec, Start, get_agent
from harness.config import Budget
from harness.gateway.usage import GatewayBudget
from harness.runtime.base import GatewayAddress, SandboxSpec
from harness.runtime.docker import GATEWAY_DIR
from harness.runtime.images import LABEL
from harness.session import SessionSpec, run_session
from support import fast_profile

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TURN = {"text": "Reading train.py.", "usage": {"input_tokens": 1000, "output_tokens": 200}}   # $0.003 (scripted-claude)
IN_THE_IMAGE = b"python -m agents.probe"   # a string the search must find (agents/probe.py): it reads every file


def reach_script(host_ip: str, gateway_port: int) -> str:
    """Through the forwarder: the gateway answers; any other address, the host's included, fails."""
    return f"""
import os, socket, subprocess, sys, time
code = subprocess.run([sys.executable, "-m", "agents.probe", "--requests", "1"], capture_output=True, text=True).stdout
print("probe", code.strip(), flush=True)
for host, port in (("1.1.1.1", 80), ({host_ip!r}, {gateway_port}), ("127.0.0.1", {gateway_port})):
    try:
        socket.create_connection((host, port), timeout=3).close(); print("reached", host, port)
    except OSError as e:
        print("blocked", host, port, type(e).__name__)
print("sockets", sorted(os.listdir({GATEWAY_DIR!r})), flush=True)
print("ready", flush=True)
time.sleep(120)
"""


def found_in(chunks: Iterable[bytes], needles: list[bytes]) -> set[bytes]:
    """The needles a stream of bytes holds, across chunk boundaries too."""
    found, tail, keep = set(), b"", max(map(len, needles)) - 1
    for chunk in chunks:
        window = tail + chunk
        found |= {n for n in needles if n in window}
        tail = window[-keep:]
    return found


def host_ip() -> str:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))   # no packet is sent: this only picks the outgoing address
        return s.getsockname()[0]


def test_the_container_reaches_the_gateway_only_and_holds_no_key(docker_runtime, model_gateway, tmp_path,
                                                                 monkeypatch):
    """The keys are in the gateway's key file and in the harness's own environment: the container's environment, its
    files (its whole root, exported, and its mounts) and its process list hold none of them."""
    for name, key in model_gateway.keys.items():
        monkeypatch.setenv(name, key)
    keys = [key.encode() for key in model_gateway.keys.values()]
    model_gateway.scripted.load({"turns": [TURN]})
    grant = model_gateway.gateway.open_session("docker-reach", tmp_path / "gw", GatewayBudget())
    (tmp_path / "ws").mkdir()
    spec = SandboxSpec(name="t-gateway", workspace=tmp_path / "ws", network="gateway",
                       gateway=GatewayAddress(grant.socket_path, grant.tcp_url))
    port = int(grant.tcp_url.rsplit(":", 1)[1])
    log = tmp_path / "agent.log"
    with docker_runtime.open(spec) as sandbox:
        env = get_agent(AgentSpec("probe", "gateway-probe")).env(
            Start(seed=0, max_experiments=0, gateway_url=sandbox.gateway_url, token=grant.token))
        runner = threading.Thread(target=sandbox.exec, daemon=True,
                                  args=(["python", "-c", reach_script(host_ip(), port)], log), kwargs={"env": env})
        runner.start()
        deadline = time.monotonic() + 90
        while "ready" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.2)
        client = docker.from_env()
        [container] = client.containers.list(filters={"label": f"{LABEL}.sandbox=t-gateway"})
        attrs = client.api.inspect_container(container.id)
        processes = json.dumps(container.top(ps_args="-eo pid,args"))
        exported = found_in(container.export(chunk_size=1 << 20), [*keys, IN_THE_IMAGE])   # its whole root
        sandbox.close()
        runner.join(timeout=30)
    model_gateway.gateway.close_session("docker-reach")
    out = log.read_text()
    assert "probe request 1: 200" in out, out
    assert [f"blocked {h} {p}" in out for h, p in (("1.1.1.1", 80), (host_ip(), port), ("127.0.0.1", port))] \
        == [True] * 3 and "reached" not in out
    assert "sockets ['gateway.sock']" in out and f"forwarding 127.0.0.1:8765 -> {GATEWAY_DIR}/gateway.sock" in out
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    assert {(m["Destination"], m["RW"]) for m in attrs["Mounts"]} == {("/workspace", True), (GATEWAY_DIR, False)}
    assert f"OPENAI_API_KEY={grant.token}" in attrs["Config"]["Env"] and "bench.forward" in processes
    inspected = json.dumps(attrs)
    for key in model_gateway.keys.values():
        assert key not in inspected and key not in processes
    mounted = found_in((p.read_bytes() for p in (tmp_path / "ws").rglob("*") if p.is_file()), keys)
    assert exported == {IN_THE_IMAGE} and mounted == set()   # its files and its mounts' (the socket has none)


def test_a_docker_session_reaches_the_gateway_and_stops_at_its_dollar_cap(docker_runtime, model_gateway,
                                                                          corpus_data, tmp_path):
    model_gateway.scripted.load({"turns": [TURN] * 50})
    spec = SessionSpec(run_id="t", agent=AgentSpec("probe", "gateway-probe"), repeat=0, seed=0,
                       profile=fast_profile(), source="corpus", budget=Budget(seconds=120, experiments=0, dollars=0.01))
    record = run_session(spec, tmp_path, docker_runtime, corpus_data, gateway=model_gateway.gateway)
    assert (record.status, record.end_reason, record.requests) == ("done", "dollars", 4), record.message
    folder: Path = tmp_path / "sessions" / spec.session_id
    assert json.loads((folder / "manifest.json").read_text())["agent"]["kind"] == "gateway-probe"
    assert "request 1: 200" in (folder / "agent.log").read_text()
