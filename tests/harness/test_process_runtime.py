"""The process runtime: scrubbed environment, workspace cwd, budget enforced by killing the process group."""

import os
import sys
import time

from harness.runtime import get_runtime
from harness.runtime.base import SandboxSpec


def _sandbox(tmp_path, **env):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return get_runtime("process", cpus=1).open(SandboxSpec(name="t", workspace=workspace, env=env)), workspace


def test_runs_in_workspace_with_scrubbed_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    sandbox, workspace = _sandbox(tmp_path, ARBENCH_SEED="3")
    log = tmp_path / "log.txt"
    code = "import os; print(os.getcwd()); print(sorted(os.environ)); print(os.environ['OMP_NUM_THREADS'])"
    result = sandbox.exec([sys.executable, "-c", code], log)
    out = log.read_text().splitlines()
    assert result.exit_code == 0 and not result.timed_out
    assert out[0] == str(workspace)
    assert "OPENAI_API_KEY" not in out[1] and "ARBENCH_SEED" in out[1]
    assert out[2] == "1"


def test_budget_kills_the_whole_process_group(tmp_path):
    sandbox, _ = _sandbox(tmp_path)
    pidfile = tmp_path / "child.pid"
    # a parent that ignores SIGTERM and a child in the background: both must be gone after the timeout
    script = (f"import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
              f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(600)")
    start = time.monotonic()
    result = sandbox.exec([sys.executable, "-c", script], tmp_path / "log.txt", timeout_s=2)
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - start < 15
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{child}") or "zombie" in open(f"/proc/{child}/status").read().lower()


def test_a_session_pinned_to_one_gpu_sees_only_that_gpu(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    sandbox = get_runtime("process").open(SandboxSpec(name="t", workspace=workspace, gpu_ids=(1,)))
    log = tmp_path / "log.txt"
    sandbox.exec([sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"], log)
    assert log.read_text().strip() == "1"
