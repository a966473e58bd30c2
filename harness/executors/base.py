"""The executor interface: submit jobs (harness/jobs.py), learn when they end, cancel them.

Two executors implement it: the local pool (local.py: this host's slots, threads of the harness) and Slurm
(slurm.py, through submitit: a job per session on the cluster's nodes). An executor reports each job that ended as
Finished: the worker's result, or `lost` when the job produced none (preempted, cancelled, its node died, the worker
raised): an infrastructure failure, which the dispatcher (dispatch.py) resubmits.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from harness.jobs import ExecutorName, Job, JobResult


@dataclass(frozen=True)
class Submitted:
    job: Job
    job_id: str           # the executor's id: the lease's job_id, jobs.json's record
    handle: Any = None    # the executor's own handle (a Future, a submitit Job)

    @property
    def key(self) -> str:
        return self.job.key


@dataclass(frozen=True)
class Finished:
    submitted: Submitted
    result: JobResult | None = None
    lost: str = ""        # why the job ended without a result ("" when it has one)


class Executor(abc.ABC):
    name: ExecutorName

    @abc.abstractmethod
    def submit(self, jobs: list[Job]) -> list[Submitted]:
        """Queue the jobs (a Slurm array where the cluster allows); one Submitted per job, in order."""

    @abc.abstractmethod
    def wait(self, submitted: list[Submitted], timeout_s: float) -> list[Finished]:
        """Those of submitted that have ended, waiting up to timeout_s for the first one ([] when none did)."""

    @abc.abstractmethod
    def attach(self, job: Job, job_id: str) -> Submitted | None:
        """A job submitted earlier (by an `arbench run` that exited) that is still queued or running, to wait on;
        None when it is not."""

    @abc.abstractmethod
    def cancel(self, submitted: list[Submitted]) -> None:
        """Stop the jobs (a running one ends as lost)."""

    def close(self) -> None:
        """Release what the executor holds (the local pool's threads); running jobs are not stopped."""
