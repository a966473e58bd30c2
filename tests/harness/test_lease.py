"""Leases (harness/lease.py): one live holder per session, dead ones taken over, heartbeats, the resume scan."""

from __future__ import annotations

import multiprocessing
import platform
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from harness.lease import (LEASE_FILE, LEASE_TTL_S, Lease, LeaseHeld, hold_lease, lease_alive, read_lease,
                           scan_sessions, try_claim)
from harness.store import write_json

RACERS = 8


def _race(folder, start, claimed, results, n):
    start.wait()
    lease = try_claim(folder, f"job-{n}", "local", 1)
    claimed.wait()   # every racer alive until all have tried: a winner's pid stays alive
    results.put((n, lease is not None))


def _race_claims(folder) -> list[int]:
    ctx = multiprocessing.get_context("fork")
    start, claimed, results = ctx.Barrier(RACERS), ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(folder, start, claimed, results, n)) for n in range(RACERS)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return [n for n, won in outcomes if won]


def _lease(**changes) -> Lease:
    now = time.time()
    return replace(Lease(job_id="other", executor="local", host=platform.node(), pid=_dead_pid(), started_at=now,
                         heartbeat_at=now, attempt=1), **changes)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_racing_claims_on_a_fresh_folder_have_one_winner(tmp_path):
    folder = tmp_path / "sessions" / "a-r0"
    winners = _race_claims(folder)
    assert len(winners) == 1
    assert read_lease(folder).job_id == f"job-{winners[0]}"


def test_racing_takeovers_of_one_dead_lease_have_one_winner(tmp_path):
    folder = tmp_path / "sessions" / "a-r0"
    write_json(folder / LEASE_FILE, _lease(heartbeat_at=time.time() - 2 * LEASE_TTL_S, host="elsewhere"))
    winners = _race_claims(folder)
    assert len(winners) == 1
    assert read_lease(folder).job_id == f"job-{winners[0]}"


@pytest.mark.parametrize("dead", [{"heartbeat_at": time.time() - 2 * LEASE_TTL_S, "host": "elsewhere"},
                                  {"pid": -1}], ids=["stale heartbeat", "dead pid on this host"])
def test_a_dead_lease_is_taken_over(tmp_path, dead):
    lease = _lease(**dead)
    if lease.pid == -1:
        lease = replace(lease, pid=_dead_pid())
    write_json(tmp_path / LEASE_FILE, lease)
    assert not lease_alive(lease)
    claimed = try_claim(tmp_path, "mine", "slurm", 2)
    assert claimed is not None and read_lease(tmp_path) == claimed and claimed.attempt == 2


def test_a_live_lease_is_not_taken_but_its_own_job_renews_it(tmp_path):
    write_json(tmp_path / LEASE_FILE, _lease(host="elsewhere"))
    assert try_claim(tmp_path, "mine", "local", 1) is None
    with pytest.raises(LeaseHeld):
        with hold_lease(tmp_path, "mine", "local", 1):
            pass
    assert read_lease(tmp_path).job_id == "other"
    assert try_claim(tmp_path, "other", "local", 2).attempt == 2


def test_hold_lease_heartbeats_and_deletes_the_lease_even_on_an_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with hold_lease(tmp_path, "mine", "local", 1, heartbeat_s=0.05) as held:
            first = read_lease(tmp_path)
            time.sleep(0.5)
            assert read_lease(tmp_path).heartbeat_at > first.heartbeat_at
            assert lease_alive(read_lease(tmp_path)) and not held.lost.is_set()
            raise RuntimeError("the session broke")
    assert not (tmp_path / LEASE_FILE).exists()


def test_a_holder_whose_lease_was_taken_over_learns_it_and_leaves_the_new_lease(tmp_path):
    with hold_lease(tmp_path, "mine", "local", 1, heartbeat_s=0.05) as held:
        write_json(tmp_path / LEASE_FILE, _lease(host="elsewhere"))
        assert held.lost.wait(5)
    assert read_lease(tmp_path).job_id == "other"


def test_scan_sessions_tells_each_state(tmp_path):
    sessions = tmp_path / "sessions"
    for sid, status in (("done-r0", "done"), ("err-r0", "agent_error"), ("infra-r0", "infra_error"),
                        ("stale-r0", "running"), ("run-r0", "running")):
        write_json(sessions / sid / "session.json", {"status": status})
    write_json(sessions / "stale-r0" / LEASE_FILE, _lease())
    with hold_lease(sessions / "run-r0", "mine", "local", 1):
        states = scan_sessions(tmp_path, ["done-r0", "err-r0", "infra-r0", "stale-r0", "run-r0", "new-r0"])
    assert states == {"done-r0": "done", "err-r0": "done", "infra-r0": "failed_infra", "stale-r0": "stale",
                      "run-r0": "running", "new-r0": "queued"}


def test_a_lease_with_fields_added_later_still_reads_and_a_broken_one_proves_no_holder(tmp_path):
    lease = _lease(host="elsewhere")
    write_json(tmp_path / LEASE_FILE, vars(lease) | {"node_list": "n[1-2]"})
    assert read_lease(tmp_path) == lease
    (tmp_path / LEASE_FILE).write_text("{")
    assert read_lease(tmp_path) is None and try_claim(tmp_path, "mine", "local", 1) is not None
