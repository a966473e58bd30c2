"""Scheduling: run independent jobs (sessions, verification runs) on this host's slots.

A slot is one GPU index (a session or verification run gets exactly that GPU) or None (a CPU share).
Every job is independent and writes its own results, so the order does not matter and a failed job
never stops the others. Slurm (one job per session) plugs in here later.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
Slot = int | None


def host_slots(gpus: Sequence[int], parallel: int) -> list[Slot]:
    """One slot per GPU: the given ones, else every GPU this host has; on a host without one, `parallel` CPU slots."""
    if not gpus:
        import torch

        gpus = range(torch.cuda.device_count())
    return list(gpus) if gpus else [None] * max(1, parallel)


def run_pool(jobs: Iterable[T], work: Callable[[T, Slot], R], slots: Sequence[Slot],
             on_done: Callable[[T, R], None] | None = None) -> list[R]:
    """Run work(job, slot) for every job, each on a slot no other running job holds; results in job order."""
    jobs = list(jobs)
    free: queue.Queue[Slot] = queue.Queue()
    for slot in slots:
        free.put(slot)

    def on_a_free_slot(job: T) -> R:
        slot = free.get()
        try:
            return work(job, slot)
        finally:
            free.put(slot)

    results: dict[int, R] = {}
    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        futures = {pool.submit(on_a_free_slot, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if on_done:
                on_done(jobs[i], results[i])
    return [results[i] for i in range(len(jobs))]
