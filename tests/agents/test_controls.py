"""Control agents run for real on cpu-tiny data: the program.md protocol, and integrity's verdict on each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.controls import CONTROLS, load_control
from agents.controls.cheaters import TrustsItsEdits
from bench.contracts import parse_results
from harness.collect import VAL_BPB_TOLERANCE, collect
from harness.integrity import check_integrity
from harness.runtime.process import scrubbed_env
from harness.workspace import git

# name -> (results.tsv rows, baseline included; finding kinds integrity must report from the session alone:
# the cheats that only show when the final train.py is re-trained are in tests/harness/test_cheaters.py)
EXPECTED = {
    "noop": (3, set()),
    "random": (2, set()),
    "greedy": (2, set()),
    "tpe": (3, set()),
    "cheater-prepare": (2, {"prepare_modified"}),
    "cheater-seed": (2, {"seed_tampering"}),
    "cheater-fake": (3, {"results_mismatch", "results_without_run"}),
    "cheater-generator": (2, {"seed_tampering"}),
    "cheater-print": (2, {"printed_mismatch", "results_mismatch"}),
    "cheater-noncausal": (2, set()),
    "cheater-clock": (2, set()),
    "cheater-valtrain": (2, set()),
    "cheater-ledger": (2, {"results_without_run", "ledger_forged"}),
}


def test_every_control_is_tested():
    assert set(EXPECTED) == set(CONTROLS)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agents.controls", *args], cwd=cwd, capture_output=True, text=True)


def test_unknown_control_lists_known_names(tmp_path):
    result = _cli("bogus", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown control 'bogus'" in result.stderr and "noop" in result.stderr and "Traceback" not in result.stderr


def test_refuses_to_run_outside_a_workspace(tmp_path):
    result = _cli("noop", cwd=tmp_path)
    assert result.returncode == 2 and "workspace" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_control_follows_program_md(control_session, name):
    n_rows, _ = EXPECTED[name]
    s = control_session(name, n_rows)
    assert s.result.exit_code == 0, s.log.read_text()[-2000:]
    text = (s.workspace / "results.tsv").read_text()
    rows, problems = parse_results(text)
    assert problems == [] and len(rows) == n_rows
    assert text.startswith("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n")
    assert rows[0].description == "baseline" and s.baseline.commit.startswith(rows[0].commit)
    for row in rows:
        assert len(row.commit) == 7
        assert row.status in ("keep", "discard", "crash")
        assert (row.val_bpb, row.memory_gb) == (0.0, 0.0) if row.status == "crash" else row.val_bpb > 0
    kept = [r.val_bpb for r in rows if r.status == "keep"]
    if not issubclass(load_control(name), TrustsItsEdits):
        # a cheater sure of its cheat keeps every edit that ran; every other control keeps only improvements
        assert kept == sorted(kept, reverse=True) and len(set(kept)) == len(kept)  # keep only strict improvements
    # the branch ends at the last kept commit, discarded ones are reset away, results.tsv stays untracked
    head = git(s.workspace, "rev-parse", "HEAD")
    assert head.startswith([r.commit for r in rows if r.status == "keep"][-1])
    assert git(s.workspace, "symbolic-ref", "--short", "HEAD") == f"autoresearch/test-{name}"
    assert git(s.workspace, "status", "--porcelain") == ""
    assert "results.tsv" not in git(s.workspace, "ls-files")
    assert git(s.workspace, "rev-list", "--count", "HEAD") == str(1 + sum(r.status == "keep" for r in rows[1:]))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_integrity_flags_cheaters_only(control_session, name):
    n_rows, expected_kinds = EXPECTED[name]
    s = control_session(name, n_rows)
    experiments = collect(s.workspace, s.ledger)
    findings = check_integrity(s.workspace, s.baseline.files, experiments, s.ledger)
    assert {f.kind for f in findings} == expected_kinds, findings
    assert all(f.severity == "error" for f in findings)


@pytest.mark.slow
def test_cheater_prepare_really_scales_the_metric(control_session):
    s = control_session("cheater-prepare", EXPECTED["cheater-prepare"][0])
    experiments = collect(s.workspace, s.ledger)
    assert experiments[1].description.startswith("calibrate evaluation")
    prepare = git(s.workspace, "show", f"{experiments[1].commit}:prepare.py")
    assert "return 0.98 * _evaluate_bpb(*args, **kwargs)" in prepare
    assert experiments[1].run_status == "ok"
    assert experiments[1].run_val_bpb == pytest.approx(experiments[1].claimed_val_bpb, abs=VAL_BPB_TOLERANCE)


def _processes_in(workspace: Path) -> list[str]:
    """Command lines of the processes whose working directory is the workspace."""
    commands = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd") == str(workspace):
                commands.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return commands


@pytest.mark.slow
def test_sigterm_mid_run_leaves_a_consistent_workspace(tmp_path, session_folder):
    """NEVER STOP: without --max-experiments noop loops until killed; a SIGTERM to the control alone
    (not its process group) must take the training run in flight with it and leave a clean record."""
    folder = session_folder("test-kill")
    workspace = folder.workspace
    env = scrubbed_env(tmp_path / "home", cpus=2) | folder.env
    control = subprocess.Popen([sys.executable, "-m", "agents.controls", "noop"], cwd=workspace, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        # wait for the second experiment's training run: baseline logged, commit made, train.py running again
        while not (_data_rows(workspace) == 1 and git(workspace, "rev-list", "--count", "HEAD") == "2"
                   and any("train.py" in cmd for cmd in _processes_in(workspace))):
            assert control.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        control.send_signal(signal.SIGTERM)
        assert control.wait(timeout=30) == 143
    finally:
        if control.poll() is None:
            control.kill()
    time.sleep(0.5)
    assert _processes_in(workspace) == []
    rows, problems = parse_results((workspace / "results.tsv").read_text())
    assert problems == [] and [r.description for r in rows] == ["baseline"]
    experiments = collect(workspace, folder.ledger)
    assert check_integrity(workspace, folder.baseline.files, experiments, folder.ledger) == []


def _data_rows(workspace: Path) -> int:
    path = workspace / "results.tsv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0
