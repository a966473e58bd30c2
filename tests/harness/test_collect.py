"""Collection: results.tsv parsing (tolerant), and records matched to commits and real runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from bench.contracts import ResultRow, header_line, parse_results
from harness.collect import collect, read_results
from harness.integrity import check_integrity
from harness.runtime.process import scrubbed_env
from harness.workspace import file_at, git, sha256_bytes

HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"


def test_row_round_trips_in_the_original_layout():
    row = ResultRow("a1b2c3d", 0.9979, 44.04, "keep", "increase\tLR\nto 0.04")
    assert row.to_line() == "a1b2c3d\t0.997900\t44.0\tkeep\tincrease LR to 0.04\n"
    assert parse_results(HEADER + row.to_line()) == ([ResultRow("a1b2c3d", 0.9979, 44.0, "keep", "increase LR to 0.04")], [])


def test_malformed_rows_become_problems_not_exceptions():
    text = HEADER + "".join([
        "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n",
        "b2c3d4e,0.993200,44.2,keep,commas\n",             # wrong separator
        "c3d4e5f\tlow\t44.0\tdiscard\tnot a number\n",
        "d4e5f6a\t0.990000\t44.0\tkept\tunknown status\n",
        "zzzzzzz\t0.990000\t44.0\tkeep\tnot a hash\n",
        "\n",                                                  # blank lines are ignored
        "e5f6a7b\tnan\t44.0\tkeep\tnot finite\n",
        "f6a7b8c\t0.000000\t0.0\tcrash\tOOM\n",
    ])
    rows, problems = parse_results(text)
    assert [r.commit for r in rows] == ["a1b2c3d", "f6a7b8c"]
    assert [p.line_no for p in problems] == [3, 4, 5, 6, 8]
    assert "tab-separated" in problems[0].reason and "status" in problems[2].reason


def test_bad_header_and_missing_file(tmp_path):
    rows, problems = parse_results("commit,val_bpb\na1b2c3d\t1.0\t1.0\tkeep\tx\n")
    assert len(rows) == 0 and problems[0].line_no == 1 and "header" in problems[0].reason
    rows, problems = read_results(tmp_path)
    assert rows == [] and len(problems) == 1 and "missing" in problems[0].reason


@pytest.mark.slow
def test_records_match_commits_and_runs(control_session):
    s = control_session("noop", 3)
    records = collect(s.workspace, s.ledger)
    baseline_hash = sha256_bytes(file_at(s.workspace, s.baseline.commit, "train.py"))
    assert [r.idx for r in records] == [0, 1, 2]
    assert records[0].commit == s.baseline.commit and records[0].parent is None
    for r in records:
        assert r.commit_found and len(r.commit) == 40 and r.train_py_sha256 == baseline_hash
        assert r.run_status == "ok" and r.run_val_bpb == pytest.approx(r.claimed_val_bpb, abs=1e-6)
        assert r.training_seconds > 0 and r.total_seconds >= r.training_seconds
    # each experiment is a child of the last kept commit; discarded ones were reset away, yet found
    head = s.baseline.commit
    for r in records[1:]:
        assert r.parent == head
        head = r.commit if r.status == "keep" else head
    assert len({r.commit for r in records}) == 3


@pytest.mark.slow
def test_discarded_commits_are_found_without_reflog(control_session, tmp_path):
    """An agent may expire the reflog: the unreachable commit objects still name the experiments."""
    s = control_session("noop", 3)
    workspace = shutil.copytree(s.workspace, tmp_path / "ws")
    git(workspace, "reflog", "expire", "--expire=now", "--all")
    assert [r.commit_found for r in collect(workspace, s.ledger)] == [True, True, True]


@pytest.mark.slow
def test_an_agents_extra_columns_reach_the_experiments_table(control_session, tmp_path):
    """An agent may log more than the five columns (e.g. tok/s between memory_gb and status): kept, by name."""
    s = control_session("noop", 3)
    workspace = shutil.copytree(s.workspace, tmp_path / "ws")
    rows, _ = read_results(s.workspace)
    (workspace / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\ttok_per_sec\tstatus\tdescription\n" + "".join(
        f"{r.commit}\t{r.val_bpb:.6f}\t{r.memory_gb}\t{1000 + i}\t{r.status}\t{r.description}\n"
        for i, r in enumerate(rows)))
    records = collect(workspace, s.ledger)
    assert [json.loads(r.extra_columns) for r in records] == [{"tok_per_sec": str(1000 + i)} for i in range(3)]
    assert [replace(r, extra_columns="{}") for r in records] == collect(s.workspace, s.ledger)


@pytest.mark.slow
def test_without_a_ledger_every_run_is_missing(control_session):
    s = control_session("noop", 3)
    records = collect(s.workspace, None)
    assert [r.run_status for r in records] == ["missing"] * 3 and all(r.commit_found for r in records)


@pytest.mark.slow
def test_records_without_head_fall_back_to_hash_and_time(control_session, tmp_path):
    s = control_session("noop", 3)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    for path in s.ledger.glob("*.json"):   # git failed when they connected
        (ledger / path.name).write_text(json.dumps(json.loads(path.read_text()) | {"head_commit": None, "dirty": None}))
    old, new = collect(s.workspace, ledger), collect(s.workspace, s.ledger)
    assert [r.run_status for r in old] == ["ok"] * 3 and old == [replace(r, run_dirty=None) for r in new]


@pytest.mark.slow
def test_rows_committed_within_one_second_get_their_own_runs(session_folder, tmp_path):
    """A row that copies the next experiment's number and never ran, its commit in the same second as that
    experiment's and with the same train.py: commit times cannot tell the runs apart, the recorded HEAD can."""
    folder = session_folder("same-second")
    ws = folder.workspace
    second = f"{int(time.time()) + 1} +0000"  # both commits, and the run's start, fall within [second - 1, second + 1)
    shas = []
    for message in ("never trained", "trained"):
        subprocess.run(["git", "-C", str(ws), "commit", "-q", "--allow-empty", "-m", message], check=True,
                       env=os.environ | {"GIT_COMMITTER_DATE": second, "GIT_AUTHOR_DATE": second})
        shas.append(git(ws, "rev-parse", "HEAD"))
    subprocess.run([sys.executable, "train.py"], cwd=ws, env=scrubbed_env(tmp_path / "home", cpus=2) | folder.env,
                   capture_output=True, check=True, timeout=120)
    folder.service.settle()
    [run] = [json.loads(p.read_text()) for p in folder.ledger.glob("*.json")]
    assert (run["head_commit"], run["dirty"]) == (shas[1], False)
    val_bpb = run["client"]["evaluations"][-1]["bpb"]
    rows = [ResultRow(sha[:7], val_bpb, 0.1, "keep", message) for sha, message in zip(shas, ("copied", "real"))]
    (ws / "results.tsv").write_text(header_line() + "".join(r.to_line() for r in rows))

    records = collect(ws, folder.ledger)
    assert [(r.commit, r.run_status, r.run_val_bpb) for r in records] == [(shas[0], "missing", None),
                                                                          (shas[1], "ok", val_bpb)]
    findings = check_integrity(ws, folder.baseline.files, records, folder.ledger)
    assert [(f.kind, f.commit) for f in findings] == [("results_without_run", shas[0])]
