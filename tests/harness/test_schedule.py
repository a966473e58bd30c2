"""The local pool: each running job holds its own slot (one GPU per session), results in job order."""

from __future__ import annotations

import threading
import time

from harness.schedule import host_slots, run_pool


def test_concurrent_jobs_never_share_a_gpu():
    held: set[int] = set()
    lock = threading.Lock()
    clashes, used = [], []

    def work(job: int, gpu: int) -> int:
        with lock:
            if gpu in held:
                clashes.append((job, gpu))
            held.add(gpu)
            used.append(gpu)
        time.sleep(0.05)
        with lock:
            held.discard(gpu)
        return job * 10

    results = run_pool(range(8), work, [0, 1])
    assert results == [j * 10 for j in range(8)]
    assert not clashes and set(used) == {0, 1} and len(used) == 8


def test_host_slots_one_per_gpu_else_cpu_slots():
    assert host_slots([2, 5], parallel=4) == [2, 5]
    assert host_slots([], parallel=3) == [None, None, None]   # this host has no GPU
