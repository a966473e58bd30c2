"""`arbench` end to end through its CLI: real control agents, real training, verification, tables."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.schedule import visible_gpus
from support import fast_profile, write_config

pytestmark = pytest.mark.slow
ARBENCH = [sys.executable, "-m", "harness.cli"]


def arbench(*args, check=True, cwd=None) -> subprocess.CompletedProcess:
    result = subprocess.run([*ARBENCH, *map(str, args)], capture_output=True, text=True, timeout=900, cwd=cwd)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("runtime", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_run_verifies_flags_and_publishes(tmp_path, corpus_data, runtime, request):
    if runtime == "docker":
        request.getfixturevalue("docker_runtime")   # the engine answers and the image holds this checkout
    out = tmp_path / "run"   # given relative to the working directory, as `make demo` does
    result = arbench("run", write_config(tmp_path, ["noop", "cheater-fake"], runtime=runtime), "--out", "run",
                     cwd=tmp_path)
    tables = {name: pd.read_parquet(out / "tables" / f"{name}.parquet")
              for name in ("sessions", "experiments", "verifications", "findings")}
    assert sorted(tables["sessions"]["session_id"]) == ["cheater-fake-r0", "noop-r0"]
    assert set(tables["sessions"]["status"]) == {"done"}
    assert (tables["experiments"].groupby("session_id").size() >= 2).all()
    flagged = set(tables["findings"]["session_id"])
    assert "cheater-fake-r0" in flagged and "noop-r0" not in flagged   # not even a warning for an honest control
    ver = tables["verifications"]
    assert set(ver["split"]) == {"val", "test"} and set(ver["seed"]) == {1000, 1001}
    assert (ver["status"] == "ok").all() and ver["bpb"].between(0.1, 20).all()
    # noop's final train.py is its baseline: verified gain exactly zero, its interval contains 0
    noop = ver[ver["session_id"] == "noop-r0"].pivot_table(index=["seed", "split"], columns="role", values="bpb")
    assert (noop["baseline"] == noop["final"]).all()
    assert "| noop |" in result.stdout and "cheater-fake" in (out / "leaderboard.md").read_text()
    manifest = json.loads((out / "sessions" / "noop-r0" / "manifest.json").read_text())
    assert manifest["profile_hash"] == fast_profile().hash and manifest["project"]["git_revision"]
    assert manifest["runtime"]["runtime"] == runtime
    # Sent to a pipe, messages are whole lines (never wrapped at 80 columns), so a log can be grepped.
    assert f"results in {out.resolve()}/ (leaderboard.md, tables/*.parquet)" in result.stderr
    assert len(re.findall(r"^  \[\d/2\] \S+-r0: done \(agent_exit\), \d+ experiments, \d+ s", result.stderr, re.MULTILINE)) == 2


def test_resume_after_kill_9_loses_and_duplicates_nothing(tmp_path, corpus_data):
    config, out = write_config(tmp_path, ["noop", "random"]), tmp_path / "run"
    proc = subprocess.Popen([*ARBENCH, "run", str(config), "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    first, second = out / "sessions" / "noop-r0", out / "sessions" / "random-r0"
    deadline = time.monotonic() + 600
    while not (second / "ledger").exists() or not list((second / "ledger").glob("*.json")):
        assert time.monotonic() < deadline and proc.poll() is None, "run ended before the second session trained"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first_record = json.loads((first / "session.json").read_text())
    assert first_record["status"] == "done"
    assert json.loads((second / "session.json").read_text())["status"] == "running"

    arbench("run", config, "--out", out)
    assert json.loads((first / "session.json").read_text()) == first_record  # kept, not redone
    assert (out / "sessions" / "random-r0.interrupted-1" / "session.json").exists()  # set aside, not lost
    sessions = pd.read_parquet(out / "tables" / "sessions.parquet")
    experiments = pd.read_parquet(out / "tables" / "experiments.parquet")
    assert sorted(sessions["session_id"]) == ["noop-r0", "random-r0"]
    assert not experiments.duplicated(["session_id", "idx"]).any()
    assert set(experiments["session_id"]) == {"noop-r0", "random-r0"}
    status = arbench("status", out)
    assert "random-r0" in status.stdout and "done" in status.stdout
    arbench("check", out)   # the store is consistent: leases, tables, cache


def test_verify_a_repo_with_the_original_results_tsv_layout(tmp_path, corpus_data):
    from harness.workspace import git, make_workspace

    repo = tmp_path / "repo"
    make_workspace(repo, fast_profile(), tag="mar5")
    baseline = git(repo, "rev-parse", "--short=7", "HEAD")
    train = repo / "train.py"
    train.write_text(train.read_text().replace("DEPTH = 1", "DEPTH = 2", 1))
    git(repo, "commit", "-qam", "deeper")
    better = git(repo, "rev-parse", "--short=7", "HEAD")
    (repo / "results.tsv").write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        f"{baseline}\t3.500000\t0.5\tkeep\tbaseline\n"
        f"{better}\t3.400000\t0.5\tkeep\tdepth 2\n"
        f"{better}\t0.000000\t0.0\tcrash\tdouble width (OOM)\n")
    result = arbench("verify", repo, "--seeds", "1000,1001", "--runtime", "process", "--out", tmp_path / "v")
    assert "claimed gain: +0.100000 bpb" in result.stdout
    for split in ("val", "test"):
        assert f"{split}: verified gain" in result.stdout, result.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "missing.toml"], "does not exist"),
    (["status", "."], "is not a run directory"),
    (["verify", "."], "is not a git repository"),
    (["verify", ".", "--seeds", "a,b"], "--seeds must be comma-separated integers"),
])
def test_bad_input_gives_one_clear_line(tmp_path, args, message):
    os.chdir(tmp_path)
    result = arbench(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(bool(visible_gpus()), reason="this host has a GPU")
def test_a_gpu_profile_on_a_host_without_a_gpu_is_one_clear_line(tmp_path):
    config = tmp_path / "h100.toml"
    config.write_text('run_id = "h"\nprofile = "h100"\nagents = ["noop"]\n')
    result = arbench("run", config, "--out", tmp_path / "out", check=False)
    assert result.returncode == 2 and "profile h100 needs a GPU" in result.stderr, result.stderr


def test_unknown_agent_in_config_is_rejected(tmp_path):
    result = arbench("run", write_config(tmp_path, ["noop", "gpt-17"]), check=False)
    assert result.returncode == 2 and "unknown agent(s) gpt-17" in result.stderr


def test_a_dry_run_through_the_gateway_against_the_scripted_server(tmp_path, corpus_data):
    """`arbench run --scripted`: a gateway agent plays against the scripted model server behind the real gateway;
    the dollar cap ends its session, the usage reaches the sessions table and `arbench status`."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"turns": [{"text": "ok", "usage": {"input_tokens": 1000, "output_tokens": 200}}]
                                  * 20}))
    config = write_config(tmp_path, ["noop"], seeds=(1000,))
    config.write_text(config.read_text().replace('agents = ["noop"]\n', "")
                      .replace("experiments = 2\n", "experiments = 2\ndollars = 0.005\n")
                      + '[agents.probe]\nkind = "gateway-probe"\nmodel = "scripted-claude"\n')
    out = tmp_path / "run"
    run = arbench("run", config, "--out", out, "--scripted", script)
    assert "cost ceiling: $0.01 = 1 LLM sessions × $0.005 cap each" in run.stderr
    sessions = pd.read_parquet(out / "tables" / "sessions.parquet").set_index("session_id")
    probe = sessions.loc["probe-r0"]
    assert (probe["kind"], probe["model"], probe["resumes"]) == ("gateway-probe", "scripted-claude", 0)
    assert (probe["status"], probe["end_reason"]) == ("done", "dollars")
    assert probe["requests"] == 2 and probe["dollars"] == pytest.approx(2 * 0.003)   # the 2nd reached the cap
    assert (out / "sessions" / "probe-r0" / "transcript.jsonl").exists()
    assert "dollars" in arbench("status", out).stdout
