"""`arbench check` (harness/check.py) on a generated store: consistent, then each kind of corruption."""

from __future__ import annotations

import platform
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.benchmark import write_store
from harness.check import check_store
from harness.cli import app
from harness.lease import LEASE_FILE, Lease, hold_lease
from harness.store import build_tables, read_json, write_json


@pytest.fixture
def run_dir(tmp_path):
    write_store(tmp_path, 4, seeds=(1000,), n_rows=2, distinct_finals=2)   # agent4-r0 queued
    return tmp_path


def arbench_check(run_dir):
    return CliRunner().invoke(app, ["check", str(run_dir)])


def problems(run_dir) -> list[str]:
    return [str(p) for p in check_store(run_dir)]


def test_a_consistent_store_passes(run_dir):
    assert problems(run_dir) == []
    result = arbench_check(run_dir)
    assert result.exit_code == 0, result.output


def test_bad_input_exits_2(tmp_path):
    assert arbench_check(tmp_path / "nothing").exit_code == 2


def test_a_file_missing_in_a_finished_session(run_dir):
    (run_dir / "sessions" / "noop-r0" / "findings.json").unlink()
    result = arbench_check(run_dir)
    assert result.exit_code == 1
    assert f"{run_dir / 'sessions' / 'noop-r0' / 'findings.json'}: missing in a finished session" in result.output


def test_a_duplicated_row(run_dir):
    path = run_dir / "tables" / "experiments.parquet"
    table = pd.read_parquet(path)
    pd.concat([table, table.iloc[[0]]]).to_parquet(path, index=False)
    found = problems(run_dir)
    assert f"{path}: duplicate row {{'session_id': 'agent3-r0', 'idx': 0}}" in found
    assert any(p.startswith(f"{path}: differs from what the folders rebuild: 9 rows") for p in found)


def test_an_edited_parquet(run_dir):
    path = run_dir / "tables" / "verifications.parquet"
    table = pd.read_parquet(path)
    table.loc[3, "bpb"] = 1.5
    table.to_parquet(path, index=False)
    assert problems(run_dir) == [f"{path}: differs from what the folders rebuild: column 'bpb', row 3: "
                                 "np.float64(1.5) in the table, np.float64(2.0) in the folders "
                                 "(`arbench analyze` rebuilds the tables)"]


def test_rows_of_a_session_without_a_folder(run_dir):
    folder = run_dir / "sessions" / "greedy-r0"
    folder.rename(run_dir / "greedy-r0")
    found = problems(run_dir)
    assert f"{run_dir / 'tables' / 'sessions.parquet'}: rows of session 'greedy-r0', which has no folder" in found


def test_leases_on_a_finished_session_and_a_dead_job(run_dir):
    done = run_dir / "sessions" / "noop-r0"
    write_json(done / LEASE_FILE, Lease("job-1", "local", platform.node(), 1, 0.0, time.time(), 1))
    running = run_dir / "sessions" / "agent4-r0"
    write_json(running / "session.json", read_json(done / "session.json") | {"session_id": "agent4-r0",
                                                                              "status": "running"})
    write_json(running / LEASE_FILE, Lease("job-2", "slurm", "node9", 1, 0.0, time.time() - 3600, 1))
    build_tables(run_dir)
    found = sorted(problems(run_dir))   # agent4-r0 before noop-r0
    assert len(found) == 2
    assert found[0].startswith(f"{running / LEASE_FILE}: stale lease: job job-2 (slurm) on node9")
    assert found[1] == f"{done / LEASE_FILE}: a lease (job-1) on a finished session (done)"


def test_a_running_session_under_a_live_lease_is_consistent(run_dir):
    folder = run_dir / "sessions" / "agent4-r0"
    with hold_lease(folder, "job-3", "local", 1):
        write_json(folder / "session.json", {"session_id": "agent4-r0", "status": "running", "agent": "agent4"})
        build_tables(run_dir)
        assert problems(run_dir) == []
    assert problems(run_dir) == [f"{folder}: unfinished without a lease (its job is gone; `arbench run` redoes it)"]


def test_a_folder_outside_the_plan(run_dir):
    (run_dir / "sessions" / "noop-r0").rename(run_dir / "sessions" / "noop-r99")
    found = problems(run_dir)
    assert found[0] == f"{run_dir / 'sessions' / 'noop-r99'}: not a session of this run's plan (run.json's agents × " \
                       "repeats)"


def test_a_tampered_cache_train_py(run_dir):
    train_py = next((run_dir / "cache").glob("*/pairs/*/seed-*/attempt-1/final/train.py"))
    train_py.write_text(train_py.read_text() + "# tampered\n")
    found = problems(run_dir)
    assert len(found) == 1 and found[0].startswith(f"{train_py}: hashes to ")
    assert arbench_check(run_dir).exit_code == 1
