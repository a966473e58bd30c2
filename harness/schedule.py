"""Scheduling: run independent jobs (sessions, verification runs) on this host's pool of slots.

Every job is independent and writes its own results, so the order does not matter and a failed
job never stops the others. Slurm (one job per session) plugs in here later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_pool(jobs: Iterable[T], work: Callable[[T], R], parallel: int,
             on_done: Callable[[T, R], None] | None = None) -> list[R]:
    """Run work(job) for every job, at most `parallel` at a time; results in job order."""
    jobs = list(jobs)
    results: dict[int, R] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {pool.submit(work, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if on_done:
                on_done(jobs[i], results[i])
    return [results[i] for i in range(len(jobs))]
