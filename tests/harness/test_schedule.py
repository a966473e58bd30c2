"""The local pool: each running job holds its own slot (one GPU per session), results in job order."""

from __future__ import annotations

import os
import threading
import time

from harness.schedule import host_slots, run_pool, visible_gpus


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


def test_gpus_are_the_drivers_list_narrowed_by_cuda_visible_devices(tmp_path, monkeypatch):
    """A host is as its driver reports it (a fake nvidia-smi here): one slot per GPU, CUDA_VISIBLE_DEVICES respected."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nfor i in 0 1 2; do echo \"GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-fake-$i)\"; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == [0, 1, 2] and host_slots([], parallel=4) == [0, 1, 2]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert visible_gpus() == [0, 2]
    monkeypatch.setenv("PATH", "/nonexistent")   # no driver: no GPU, CPU slots
    assert visible_gpus() == [] and host_slots([], parallel=2) == [None, None]
