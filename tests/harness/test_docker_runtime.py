"""The docker runtime on the real engine and the real CPU image: what an agent's container can reach.

Skipped, with the reason, only where no engine answers outside CI; in CI (CI=true) that fails.
"""

from __future__ import annotations

import hashlib
import http.server
import ipaddress
import json
import socket
import os
import subprocess
import threading
import time
from pathlib import Path

import docker
import pytest

from agents.base import AgentSpec
from support import fast_profile
from harness.config import Budget
from harness.runtime import get_runtime
from harness.runtime.base import Mount, RuntimeError_, SandboxSpec
from harness.runtime.docker import DockerRuntime, docker_available
from harness.runtime.images import LABEL, PROJECT_ROOT
from harness.runtime.process import KILL_GRACE_S
from harness.session import SessionSpec, run_session

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def runtime(docker_runtime) -> DockerRuntime:
    return docker_runtime


@pytest.fixture
def dirs(tmp_path):
    """A workspace (a git repo), a data dir to mount and a hidden test dir that is never mounted."""
    workspace, data, hidden = tmp_path / "ws", tmp_path / "data", tmp_path / "heldout"
    for d in (workspace, data, hidden):
        d.mkdir()
    (data / "train.txt").write_text("train")
    (hidden / "test.txt").write_text("secret test split")
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    return workspace, data, hidden


def spec_for(workspace: Path, data: Path, **kw) -> SandboxSpec:
    return SandboxSpec(name="t-docker", workspace=workspace, mounts=(Mount(data, "/data"),), **kw)


def run_python(runtime, spec, code: str, tmp_path: Path, **kw):
    log = tmp_path / "log.txt"
    with runtime.open(spec) as sandbox:
        result = sandbox.exec(["python", "-c", code], log, **kw)
    return result, log.read_text()


def sandbox_containers() -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"{LABEL}.sandbox=t-docker"})


class HostServer:
    """An HTTP server on every host address, so a container with a route to the host would reach it."""

    def __enter__(self):
        self.server = http.server.HTTPServer(("0.0.0.0", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def __exit__(self, *exc):
        self.server.shutdown()


def host_addresses() -> list[str]:
    """The host on the docker bridge, the host's own address on its default route, and loopback."""
    ipam = docker.from_env().networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(ipaddress.ip_network(ipam["Subnet"])[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))   # no packet is sent: this only picks the outgoing address
        own = s.getsockname()[0]
    return [gateway, own, "127.0.0.1"]


def fetch_script(port: int) -> str:
    return (f"import urllib.request\nfor host in {host_addresses()!r}:\n"
            f"    try:\n        urllib.request.urlopen(f'http://{{host}}:{port}/', timeout=3); print('reached', host)\n"
            f"    except OSError as e:\n        print('blocked', host, type(e).__name__)\n")


def test_hidden_data_keys_and_host_network_are_out_of_reach(runtime, dirs, tmp_path, monkeypatch):
    workspace, data, hidden = dirs
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    code = (f"import os\nprint('data', open('/data/train.txt').read())\n"
            f"print('hidden', os.path.exists({str(hidden)!r}), os.path.exists('/heldout'))\n"
            f"print('keys', [k for k in os.environ if 'KEY' in k or 'TOKEN' in k])\n"
            f"print('seed', os.environ['ARBENCH_SEED'], os.environ['PYTHONPATH'])\n")
    with HostServer() as port:
        result, out = run_python(runtime, spec_for(workspace, data, env={"ARBENCH_SEED": "7"}),
                                 code + fetch_script(port), tmp_path)
        _, open_out = run_python(get_runtime("process"), spec_for(workspace, data), fetch_script(port), tmp_path)
    assert result.exit_code == 0, out
    assert "data train" in out and "hidden False False" in out and "keys []" in out
    assert "seed 7 /opt/arbench/bench/sitecustomize" in out
    assert [f"blocked {host}" in out for host in host_addresses()] == [True] * 3 and "reached" not in out
    assert f"reached {host_addresses()[0]}" in open_out  # outside a container, the same request goes through


def test_writes_outside_the_workspace_fail_and_ownership_returns(runtime, dirs, tmp_path):
    workspace, data, _ = dirs
    owner = (workspace.stat().st_uid, workspace.stat().st_gid)
    code = ("import subprocess\n"
            "for path in ('/data/x', '/opt/arbench/bench/prepare.py', '/etc/passwd', '/x'):\n"
            "    try:\n        open(path, 'a').write('x'); print('wrote', path)\n"
            "    except OSError as e:\n        print('refused', path, e.errno)\n"
            "open('/workspace/ok.txt', 'w').write('ok')\n"
            "subprocess.run(['git', 'commit', '-q', '--allow-empty', '-m', 'in the container'], check=True)\n")
    result, out = run_python(runtime, spec_for(workspace, data), code, tmp_path)
    assert result.exit_code == 0, out
    assert "wrote" not in out and out.count("refused") == 4
    assert (workspace / "ok.txt").read_text() == "ok" and not (data / "x").exists()
    assert {(p.stat().st_uid, p.stat().st_gid) for p in [workspace, *workspace.rglob("*")]} == {owner}
    log = subprocess.run(["git", "-C", str(workspace), "log", "--format=%s"], capture_output=True, text=True)
    assert log.stdout.strip() == "in the container"  # the host's git accepts the repo again


def test_budget_stops_a_command_that_ignores_it(runtime, dirs, tmp_path):
    workspace, data, _ = dirs
    code = ("import signal, subprocess, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "subprocess.Popen(['sleep', '600'])\nprint('ignoring', flush=True)\ntime.sleep(600)\n")
    start = time.monotonic()
    result, out = run_python(runtime, spec_for(workspace, data), code, tmp_path, timeout_s=3)
    assert result.timed_out and result.exit_code is None
    assert 3 <= time.monotonic() - start < 3 + KILL_GRACE_S + 5
    assert "ignoring" in out and "[arbench] container stopped at its time limit of 3 s" in out
    assert sandbox_containers() == []


def test_container_killed_mid_command_is_a_result_with_its_log(runtime, dirs, tmp_path):
    workspace, data, _ = dirs
    log = tmp_path / "log.txt"

    def kill_when_started():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "started" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.1)
        for container in sandbox_containers():
            container.kill()

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    with runtime.open(spec_for(workspace, data)) as sandbox:
        result = sandbox.exec(["python", "-c", "import time; print('started', flush=True); time.sleep(600)"], log,
                              timeout_s=60)
    killer.join()
    assert result.exit_code == 137 and not result.timed_out and result.seconds < 30
    assert "started" in log.read_text() and sandbox_containers() == []
    assert log.read_text().endswith("[arbench] container killed (SIGKILL) from outside the command\n")


def test_out_of_memory_is_a_result_with_its_log(runtime, dirs, tmp_path):
    workspace, data, _ = dirs
    code = "print('allocating', flush=True)\nblocks = [bytearray(2**27) for _ in range(16)]\nprint('survived')\n"
    result, out = run_python(runtime, spec_for(workspace, data, memory_gb=0.25), code, tmp_path, timeout_s=60)
    assert result.exit_code == 137 and "allocating" in out and "survived" not in out
    assert "[arbench] container killed: out of memory (container limit 0.25 GiB)" in out


def test_gpu_request_limits_and_mounts_as_sent_to_the_engine(runtime, dirs):
    """Created, never started (CI has no GPU): HostConfig is what the SDK sent for --gpus 0,1."""
    workspace, data, hidden = dirs
    spec = spec_for(workspace, data, gpu_ids=(0, 1), cpus=1.5, memory_gb=0.5)
    with runtime.open(spec) as sandbox:
        container = runtime.client.containers.create(**sandbox.container_config(["nvidia-smi"]))
    try:
        host = runtime.client.api.inspect_container(container.id)["HostConfig"]
    finally:
        container.remove(force=True)
    assert host["DeviceRequests"] == [{"Driver": "", "Count": 0, "DeviceIDs": ["0", "1"],
                                       "Capabilities": [["gpu"]], "Options": {}}]
    assert host["NetworkMode"] == "none" and host["NanoCpus"] == 1_500_000_000 and host["Memory"] == 512 * 2**20
    assert host["CapDrop"] == ["ALL"] and not host.get("Binds") and not host.get("Devices")
    mounts = {(m["Source"], m["Target"], m.get("ReadOnly", False)) for m in host["Mounts"]}
    assert mounts == {(str(workspace), "/workspace", False), (str(data), "/data", True)}
    with runtime.open(spec_for(workspace, data)) as sandbox:
        assert not sandbox.container_config(["true"])["device_requests"]


def test_run_with_gpus_0_1_gives_each_session_exactly_its_own_gpu(runtime, corpus_data, tmp_path):
    """`arbench run --gpus 0,1`: sessions run on slots 0 and 1; each container asks for that one GPU only."""
    from harness.schedule import host_slots, run_pool
    from harness.session import agent_sandbox

    specs = [SessionSpec(run_id="t", agent=AgentSpec("noop"), repeat=r, seed=r, profile=fast_profile(), source="corpus",
                         budget=Budget(seconds=60, experiments=1)) for r in range(4)]

    def device_ids(spec, gpu):
        folder = tmp_path / spec.session_id
        (folder / "workspace").mkdir(parents=True)
        (folder / "ledger-socket").mkdir()
        with runtime.open(agent_sandbox(spec, folder, corpus_data, gpu, folder / "ledger-socket")) as sandbox:
            container = runtime.client.containers.create(**sandbox.container_config(["nvidia-smi"]))
        try:
            requests = runtime.client.api.inspect_container(container.id)["HostConfig"]["DeviceRequests"]
        finally:
            container.remove(force=True)
        return gpu, [r["DeviceIDs"] for r in requests]

    results = run_pool(specs, device_ids, host_slots([0, 1], parallel=1))
    assert {gpu for gpu, _ in results} == {0, 1}
    assert all(ids == [[str(gpu)]] for gpu, ids in results)


def test_paths_map_to_the_container(runtime, dirs):
    workspace, data, hidden = dirs
    with runtime.open(spec_for(workspace, data)) as sandbox:
        assert sandbox.path(workspace / "train.py") == "/workspace/train.py"
        assert sandbox.path(data / "train") == "/data/train"
        assert sandbox.path(PROJECT_ROOT / "bench" / "sitecustomize") == "/opt/arbench/bench/sitecustomize"
        with pytest.raises(RuntimeError_, match="not visible"):
            sandbox.path(hidden)


def test_describe_records_the_image_and_its_lock(runtime):
    info = runtime.describe()
    lock = (PROJECT_ROOT / "images" / "cpu.lock").read_bytes()
    assert info["image_id"].startswith("sha256:") and info["engine_version"]
    assert info["lock_sha256"] == hashlib.sha256(lock).hexdigest()


def test_auto_falls_back_to_the_process_runtime_with_a_warning(monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert not docker_available()
    assert get_runtime("auto").name == "process"
    assert "NOT containerized" in capsys.readouterr().err


def docker_session(runtime, corpus_data, run_dir: Path, experiments: int, seconds: float = 300):
    spec = SessionSpec(run_id="t", agent=AgentSpec("noop"), repeat=0, seed=3, profile=fast_profile(), source="corpus",
                       budget=Budget(seconds=seconds, experiments=experiments))
    return run_session(spec, run_dir, runtime, corpus_data), run_dir / "sessions" / spec.session_id


def test_control_agent_session_in_a_container(runtime, corpus_data, tmp_path):
    record, folder = docker_session(runtime, corpus_data, tmp_path, experiments=2)
    assert (record.status, record.end_reason, record.n_experiments) == ("done", "agent_exit", 2), record.message
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["runtime"]["image_id"] == runtime.image.id
    rows = json.loads((folder / "experiments.json").read_text())
    assert [r["run_status"] for r in rows] == ["ok", "ok"]
    assert json.loads((folder / "findings.json").read_text()) == []
    assert {p.stat().st_uid for p in (folder / "workspace").rglob("*")} == {os.geteuid()}


def test_session_whose_container_dies_keeps_its_rows(runtime, corpus_data, tmp_path):
    results = tmp_path / "sessions" / "noop-r0" / "workspace" / "results.tsv"

    def kill_after_first_row():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(results.read_text().splitlines() if results.exists() else []) < 2:
            time.sleep(0.2)
        for container in docker.from_env().containers.list(filters={"label": f"{LABEL}.sandbox"}):
            if container.labels[f"{LABEL}.sandbox"].startswith("arbench-t-noop-r0"):
                container.kill()

    killer = threading.Thread(target=kill_after_first_row)
    killer.start()
    record, folder = docker_session(runtime, corpus_data, tmp_path, experiments=0, seconds=240)
    killer.join()
    assert record.status == "infra_error", record.message
    assert "killed (SIGKILL) from outside" in record.message
    rows = json.loads((folder / "experiments.json").read_text())
    assert len(rows) >= 1 and rows[0]["run_status"] == "ok"
    assert record.n_experiments == len(rows)
