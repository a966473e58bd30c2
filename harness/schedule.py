"""Scheduling: run independent jobs (sessions, verification runs) on this host's slots.

A slot is one GPU index (a session or verification run gets exactly that GPU) or None (a CPU share).
Every job is independent and writes its own results, so the order does not matter and a failed job
never stops the others. The local executor (harness/executors/local.py) runs a run's jobs on a SlotPool.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from functools import partial
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
Slot = int | None


def visible_gpus() -> list[int]:
    """The GPU indices this host offers: what `nvidia-smi -L` lists (the driver's view, which the sandboxes get too),
    narrowed by CUDA_VISIBLE_DEVICES when that holds indices; [] without a driver."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = [int(m.group(1)) for m in re.finditer(r"^GPU (\d+):", listing, re.MULTILINE)]
    allowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if allowed is not None and all(part.strip().isdigit() for part in allowed.split(",") if part.strip()):
        gpus = [g for g in gpus if str(g) in {part.strip() for part in allowed.split(",")}]
    return gpus


def host_slots(gpus: Sequence[int], parallel: int) -> list[Slot]:
    """One slot per GPU: the given ones, else every GPU this host has; on a host without one, `parallel` CPU slots."""
    gpus = list(gpus) or visible_gpus()
    return gpus if gpus else [None] * max(1, parallel)


class SlotPool:
    """Threads that each run a job on a slot no other running job holds (one per slot)."""

    def __init__(self, slots: Sequence[Slot]):
        self._free: queue.Queue[Slot] = queue.Queue()
        for slot in slots:
            self._free.put(slot)
        self._threads = ThreadPoolExecutor(max_workers=len(slots))

    def submit(self, work: Callable[[Slot], R]) -> Future[R]:
        return self._threads.submit(self._on_a_free_slot, work)

    def _on_a_free_slot(self, work: Callable[[Slot], R]) -> R:
        slot = self._free.get()
        try:
            return work(slot)
        finally:
            self._free.put(slot)

    def shutdown(self) -> None:
        """Drop the jobs not started; wait for the running ones."""
        self._threads.shutdown(cancel_futures=True)


def run_pool(jobs: Iterable[T], work: Callable[[T, Slot], R], slots: Sequence[Slot],
             on_done: Callable[[T, R], None] | None = None) -> list[R]:
    """Run work(job, slot) for every job, each on a slot no other running job holds; results in job order."""
    jobs = list(jobs)
    pool = SlotPool(slots)
    results: dict[int, R] = {}
    try:
        futures = {pool.submit(partial(work, job)): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if on_done:
                on_done(jobs[i], results[i])
    finally:
        pool.shutdown()
    return [results[i] for i in range(len(jobs))]
