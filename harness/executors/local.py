"""The local executor: this host's slots (one per GPU, or CPU shares), each job in a thread of the harness.

A local job lives as long as the harness: its id names this process (local-<host>-<pid>-<n>), so a lease left by a
harness killed with kill -9 is dead at once (lease_alive checks the pid on this host) and the next run redoes it.
"""

from __future__ import annotations

import itertools
import os
import platform
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from dataclasses import replace

from harness.executors.base import Executor, Finished, Submitted
from harness.jobs import Job, run_job
from harness.schedule import Slot, SlotPool


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, slots: list[Slot]):
        self._pool = SlotPool(slots)
        self._ids = itertools.count()

    def submit(self, jobs: list[Job]) -> list[Submitted]:
        submitted = []
        for job in jobs:
            job_id = f"local-{platform.node()}-{os.getpid()}-{next(self._ids)}"
            future = self._pool.submit(lambda slot, job=job, job_id=job_id: run_job(
                replace(job, placement=replace(job.placement, job_id=job_id, slot=slot))))
            submitted.append(Submitted(job, job_id, future))
        return submitted

    def wait(self, submitted: list[Submitted], timeout_s: float) -> list[Finished]:
        by_future: dict[Future, Submitted] = {s.handle: s for s in submitted}
        done, _ = wait_futures(by_future, timeout=timeout_s, return_when=FIRST_COMPLETED)
        return [_finished(by_future[f]) for f in done]

    def attach(self, job: Job, job_id: str) -> Submitted | None:
        return None   # a local job ended with the harness that ran it

    def cancel(self, submitted: list[Submitted]) -> None:
        for s in submitted:
            s.handle.cancel()   # one not started yet; a running thread ends with its job

    def close(self) -> None:
        self._pool.shutdown()


def _finished(submitted: Submitted) -> Finished:
    future: Future = submitted.handle
    if future.cancelled():
        return Finished(submitted, lost="cancelled")
    error = future.exception()
    if error is not None:
        return Finished(submitted, lost=f"the worker raised {type(error).__name__}: {error}")
    return Finished(submitted, result=future.result())
