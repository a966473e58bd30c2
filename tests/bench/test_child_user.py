"""Trusted runs in a verification container (docker runtime, start_as_root): the launcher reads the held-out
test split as root; train.py runs as the agent user and cannot read it. Real engine, real CPU image, real
launcher; skipped where no engine answers (outside CI), and where the harness is not root (no drop possible).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from bench.contracts import RunOutcome
from bench.launch import CHILD_USER_ENV
from harness.data import DATA_TARGET, TEST_TARGET, DataPaths
from harness.runtime.base import Mount, SandboxSpec
from harness.runtime.docker import AGENT_USER
from launching import workspace

pytestmark = [pytest.mark.docker, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="containers run as the harness's user: no drop possible")]

SAME_USER = "train.py runs as the launcher's own user"


def verification_spec(ws: Path, data: DataPaths, **kw) -> SandboxSpec:
    """What harness/verify.py gives the launcher: the data and the test split mounted, started as root."""
    return SandboxSpec(name="t-child-user", workspace=ws, mounts=(Mount(data.data_dir, DATA_TARGET),
                                                                  Mount(data.test_dir, TEST_TARGET)), **kw)


def trusted_run(runtime, ws: Path, data: DataPaths, *options: str) -> tuple[RunOutcome, str]:
    """The launcher in trusted mode (val and test) in a verification container: its outcome and its own log."""
    argv = ["python", "-m", "bench.launch", "--seed", "3", "--result", "result.json", "--log", "run.log",
            "--trusted", "val,test", *options, "train.py"]
    with runtime.open(verification_spec(ws, data, start_as_root=True)) as sandbox:
        env = {"ARBENCH_PROFILE": sandbox.path(ws / "profile.toml"), "ARBENCH_DATA_DIR": sandbox.path(data.data_dir),
               "ARBENCH_TEST_DIR": sandbox.path(data.test_dir)}
        result = sandbox.exec(argv, ws.parent / f"{ws.name}-launcher.log", timeout_s=300, env=env)
    launcher_log = (ws.parent / f"{ws.name}-launcher.log").read_text()
    assert result.exit_code == 0, launcher_log
    return RunOutcome.from_json((ws / "result.json").read_text()), launcher_log


def probe(test_shard: str) -> str:
    """Lines for the top of train.py: walk the filesystem for parquet files and read each, then open the test shard
    where the parent reads it and through the parent's root; print what it could read (with the sha256) or not."""
    return (
        "import hashlib, os\n"
        "def _probe(path):\n"
        "    try:\n"
        "        with open(path, 'rb') as f:\n"
        "            print('read', path, hashlib.sha256(f.read()).hexdigest(), flush=True)\n"
        "    except OSError as e:\n"
        "        print('refused', path, type(e).__name__, flush=True)\n"
        "def _unlistable(e):\n"
        "    print('unlistable', e.filename, type(e).__name__, flush=True)\n"
        "for _root, _dirs, _files in os.walk('/', onerror=_unlistable):\n"
        "    if _root == '/':\n"
        "        _dirs[:] = [d for d in _dirs if d not in ('proc', 'sys', 'dev')]\n"
        "    for _name in _files:\n"
        "        if _name.endswith('.parquet'):\n"
        "            _probe(os.path.join(_root, _name))\n"
        f"_probe('{TEST_TARGET}/{test_shard}')\n"
        f"_probe(f'/proc/{{os.getppid()}}/root{TEST_TARGET}/{test_shard}')\n")


def test_verification_container_starts_as_root_able_only_to_drop(docker_runtime, corpus_data, tmp_path):
    """Created, never started: a trusted spec starts as root (SETUID, SETGID, KILL only); an agent's as `agent`."""
    ws = workspace(tmp_path / "ws", steps=1)
    configs = {}
    for start_as_root in (True, False):
        with docker_runtime.open(verification_spec(ws, corpus_data, start_as_root=start_as_root)) as sandbox:
            container = docker_runtime.client.containers.create(**sandbox.container_config(["true"]))
        try:
            configs[start_as_root] = docker_runtime.client.api.inspect_container(container.id)
        finally:
            container.remove(force=True)
    root, agent = configs[True], configs[False]
    assert root["Config"]["User"] == "0:0" and f"{CHILD_USER_ENV}={AGENT_USER}" in root["Config"]["Env"]
    assert sorted(root["HostConfig"]["CapAdd"]) == ["KILL", "SETGID", "SETUID"]
    assert root["HostConfig"]["CapDrop"] == ["ALL"] and root["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
    assert agent["Config"]["User"] == AGENT_USER and not agent["HostConfig"]["CapAdd"]
    assert not any(e.startswith(CHILD_USER_ENV) for e in agent["Config"]["Env"])


def test_train_py_cannot_read_the_test_split_and_the_run_is_still_scored(docker_runtime, corpus_data, tmp_path):
    assert corpus_data.test_dir.stat().st_mode & 0o777 == 0o700   # require_prepared sealed it
    shard = sorted(corpus_data.test_dir.glob("*.parquet"))[0]
    secret = hashlib.sha256(shard.read_bytes()).hexdigest()
    ws = workspace(tmp_path / "ws", steps=2, edit=lambda text: probe(shard.name) + text)
    outcome, launcher_log = trusted_run(docker_runtime, ws, corpus_data)
    log = (ws / "run.log").read_text()
    assert f"unlistable {TEST_TARGET} PermissionError" in log
    assert f"refused {TEST_TARGET}/{shard.name} PermissionError" in log
    assert re.search(rf"refused /proc/\d+/root{TEST_TARGET}/{shard.name} PermissionError", log), log
    assert re.search(rf"read {DATA_TARGET}/val/\S+\.parquet [0-9a-f]{{64}}", log), log   # the probe did walk
    assert secret not in log and SAME_USER not in launcher_log
    assert outcome.status == "ok", outcome.message
    assert set(outcome.trusted) == {"val", "test"} and outcome.checks["causal"]


def test_honest_run_scores_the_same_as_the_agent_user(docker_runtime, corpus_data, tmp_path):
    """The same step-limited run with the drop and without it (--child-user ''): the same scores."""
    outcomes = {}
    for name, options in (("dropped", ()), ("same-user", ("--child-user", ""))):
        outcomes[name], launcher_log = trusted_run(docker_runtime, workspace(tmp_path / name, steps=2), corpus_data,
                                                   *options)
        assert (SAME_USER in launcher_log) == (name == "same-user"), launcher_log
        assert outcomes[name].status == "ok", outcomes[name].message
    assert outcomes["dropped"].trusted == pytest.approx(outcomes["same-user"].trusted, rel=1e-6)


def test_the_launcher_still_kills_a_dropped_child_at_its_limit(docker_runtime, corpus_data, tmp_path):
    """Signalling another user's processes takes CAP_KILL: without it the launcher could not stop train.py."""
    ws = workspace(tmp_path / "ws", edit=lambda _: "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
    outcome, launcher_log = trusted_run(docker_runtime, ws, corpus_data, "--train-limit", "10")
    assert outcome.status == "over_budget" and outcome.wall_seconds < 40, outcome.message
    assert "sleeping" in (ws / "run.log").read_text() and SAME_USER not in launcher_log
