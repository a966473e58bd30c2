"""Fixtures shared by every test area: prepared cpu-tiny data, real control-agent sessions, and the LLM gateway in
front of the scripted model server (both real processes)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.contracts import LEDGER_SOCKET_ENV
from bench.profile import load_profile
from harness.data import DataMissing, DataPaths, require_prepared
from harness.gateway.client import Gateway
from harness.gateway.scripted import ScriptedServer
from harness.gateway.upstream import RetryPolicy
from harness.ledger import LedgerService
from harness.runtime import get_runtime
from harness.runtime.base import ExecResult, RuntimeError_, SandboxSpec
from harness.runtime.docker import DockerRuntime, docker_available
from harness.runtime.images import IMAGES, PROJECT_ROOT
from harness.workspace import Baseline, make_workspace
from support import fast_profile, write_config


@pytest.fixture(scope="session")
def corpus_data() -> DataPaths:
    """cpu-tiny's offline corpus, prepared once (idempotent, so a prepared cache costs nothing)."""
    profile = load_profile("cpu-tiny")
    try:
        return require_prepared(profile)
    except DataMissing:
        subprocess.run([sys.executable, "-m", "bench.prepare", "--profile", "cpu-tiny", "--source", profile.source],
                       check=True, capture_output=True)
        return require_prepared(profile)


@dataclass(frozen=True)
class SessionFolder:
    """A fresh workspace, its run ledger's service and records, and the environment harness/session.py gives an agent."""
    workspace: Path
    ledger: Path
    baseline: Baseline
    env: dict[str, str]
    service: LedgerService


@contextmanager
def new_session_folder(root: Path, data: DataPaths, tag: str, seed: int = 0) -> Iterator[SessionFolder]:
    workspace, ledger = root / "workspace", root / "ledger"
    baseline = make_workspace(workspace, fast_profile(), tag=tag)
    with LedgerService(workspace, ledger) as service:
        env = {"ARBENCH_DATA_DIR": str(data.data_dir), LEDGER_SOCKET_ENV: str(service.socket_path),
               "ARBENCH_SEED": str(seed)}
        yield SessionFolder(workspace, ledger, baseline, env, service)


@dataclass(frozen=True)
class ControlSession:
    """A control agent run for real to its last experiment, through the process runtime."""
    workspace: Path
    ledger: Path
    baseline: Baseline
    result: ExecResult
    log: Path


@pytest.fixture
def session_folder(tmp_path, corpus_data):
    """session_folder(tag): its ledger service runs until the test ends."""
    with ExitStack() as stack:
        yield lambda tag: stack.enter_context(new_session_folder(tmp_path, corpus_data, tag))


@pytest.fixture(scope="session")
def control_session(tmp_path_factory, corpus_data):
    """control_session(name, max_experiments): run once per test session, shared by the tests that read it."""
    sessions: dict[tuple[str, int], ControlSession] = {}

    def get(name: str, max_experiments: int) -> ControlSession:
        if (name, max_experiments) not in sessions:
            root = tmp_path_factory.mktemp(f"{name}-{max_experiments}")
            argv = ["python", "-m", "agents.controls", name, "--max-experiments", str(max_experiments)]
            with new_session_folder(root, corpus_data, tag=f"test-{name}") as folder, \
                    get_runtime("process", cpus=2).open(SandboxSpec(name=name, workspace=folder.workspace,
                                                                    env=folder.env)) as sandbox:
                result = sandbox.exec(argv, root / "agent.log", timeout_s=600)
            sessions[name, max_experiments] = ControlSession(folder.workspace, folder.ledger, folder.baseline, result,
                                                             root / "agent.log")
        return sessions[name, max_experiments]

    return get


@pytest.fixture(scope="session")
def docker_runtime() -> DockerRuntime:
    """The CPU image, (re)built if this checkout changed (cached: seconds), and a runtime on it."""
    if not docker_available():
        message = "no Docker engine answers (start dockerd, e.g. as .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    for attempt in range(3):  # the checkout may be edited while the image builds: the runtime refuses it then
        build = subprocess.run([sys.executable, "images/build.py", "cpu"], cwd=PROJECT_ROOT, capture_output=True,
                               text=True)
        assert build.returncode == 0, build.stderr[-2000:]
        try:
            return DockerRuntime(IMAGES["cpu"])
        except RuntimeError_ as e:
            if "holds other code" not in str(e) or attempt == 2:
                raise


@dataclass(frozen=True)
class ModelGateway:
    """The gateway with the scripted model server as both providers: load a script, open sessions."""
    gateway: Gateway
    scripted: ScriptedServer
    keys: dict[str, str]   # the provider keys, random per test session: only the gateway process holds them


@pytest.fixture(scope="session")
def model_gateway(tmp_path_factory) -> Iterator[ModelGateway]:
    """Provider errors are retried fast and an outage is declared after 1.5 s, so that tests of both take seconds."""
    root = tmp_path_factory.mktemp("model-gateway")
    keys = {"ANTHROPIC_API_KEY": f"sk-ant-test-{secrets.token_hex(16)}",
            "OPENAI_API_KEY": f"sk-test-{secrets.token_hex(16)}"}
    (root / "keys.env").write_text("".join(f"{name}={value}\n" for name, value in keys.items()))
    retry = RetryPolicy(base_s=0.01, max_s=0.05, outage_limit_s=1.5, timeout_s=5.0)
    with ScriptedServer.start(log=root / "scripted.log") as scripted, \
            Gateway.start(root / "state", {"anthropic": scripted.url, "openai": scripted.url}, root / "keys.env",
                          retry=retry) as gateway:
        yield ModelGateway(gateway, scripted, keys)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, corpus_data) -> tuple[Path, subprocess.CompletedProcess]:
    """`arbench run` of every control (tests/harness/test_cheaters.py), one session each, verified on 3 held-out
    seeds, after this node's calibration (2 baseline runs): run once per test session, shared by the tests that read
    its run folder (also its site's browser test and tests/harness/test_calibration.py)."""
    from agents.controls import CONTROLS
    root = tmp_path_factory.mktemp("cheaters")
    config = write_config(root, list(CONTROLS), seeds=(1000, 1001, 1002), calibration_runs=2)
    result = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(config), "--out", str(root / "run")],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run", result

