"""Run a list of jobs to their results on an executor, across harness restarts and infrastructure failures.

- A job already settled (a final session, a cached pair) is not run again.
- A job an earlier `arbench run` submitted that is still queued or running (its id in <run_dir>/jobs.json) is
  waited on, not submitted twice: the harness may exit after submitting and pick up where things are.
- A session whose lease another job holds (another harness on the same folder) is watched until that job ends;
  redone when it ended without a final record.
- A job lost to the infrastructure (preempted, cancelled, its node dead, the worker raised), or whose result is an
  infrastructure failure, is resubmitted up to max_resubmits times; after that its failure is recorded (on the
  session, or as the pair's failure), never raised: the run goes on to analysis and publishing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.executors.base import Executor, Finished, Submitted
from harness.jobs import Job, JobResult, Skipped, lost, needs_redo
from harness.lease import folder_lock
from harness.store import read_json, write_json

JOBS_FILE = "jobs.json"
WATCH_S = 5.0        # between looks at a session another job holds
WAIT_S = 30.0        # longest wait on the executor before looking at the watched sessions again


@dataclass(frozen=True)
class Journal:
    """<run_dir>/jobs.json: for each job key, the executor's job id of its latest submission, its executor and
    attempt. Read-merge-written under a lock, so that two harnesses on one folder keep each other's records."""
    run_dir: Path

    def read(self) -> dict[str, dict]:
        return read_json(self.run_dir / JOBS_FILE, {})

    def record(self, submitted: list[Submitted], executor: str) -> None:
        if not submitted:
            return
        with folder_lock(self.run_dir / JOBS_FILE):   # the lock file beside it: .jobs.json.lock
            jobs = self.read()
            jobs |= {s.key: {"job_id": s.job_id, "executor": executor, "attempt": s.job.attempt,
                             "submitted_at": round(time.time(), 3)} for s in submitted}
            write_json(self.run_dir / JOBS_FILE, jobs)


@dataclass
class Dispatch:
    executor: Executor
    journal: Journal
    max_resubmits: int
    on_done: Callable[[Job, JobResult], None] = lambda job, result: None
    note: Callable[[str], None] = lambda line: None
    results: dict[str, JobResult] = field(default_factory=dict)
    active: list[Submitted] = field(default_factory=list)
    watched: list[Job] = field(default_factory=list)

    def run(self, jobs: list[Job], wait: bool = True) -> dict[str, JobResult]:
        """Every job's result by key; with wait=False, only those settled already (the rest submitted or running)."""
        recorded, fresh = self.journal.read(), []
        for job in jobs:
            settled = job.settled()
            prior = recorded.get(job.key, {})
            attached = self.executor.attach(job, prior["job_id"]) \
                if settled is None and prior.get("executor") == self.executor.name else None
            if settled is not None:
                self._finish(job, settled)
            elif attached is not None:
                self.note(f"  {job.key}: waiting for job {attached.job_id}, submitted earlier")
                self.active.append(attached)
            elif job.held_elsewhere():
                self._watch(job)
            else:
                fresh.append(job)
        self._submit(fresh)
        while wait and (self.active or self.watched):
            if self.active:
                finished = self.executor.wait(self.active, WATCH_S if self.watched else WAIT_S)
            else:
                finished = []
                time.sleep(WATCH_S)
            for f in finished:
                self.active.remove(f.submitted)
                self._handle(f)
            self._look_at_watched()
        return self.results

    def _submit(self, jobs: list[Job]) -> None:
        submitted = self.executor.submit(jobs)
        self.journal.record(submitted, self.executor.name)
        self.active += submitted

    def _handle(self, finished: Finished) -> None:
        job, result = finished.submitted.job, finished.result
        if isinstance(result, Skipped):
            self._watch(job)
        elif finished.lost or needs_redo(result):
            why = finished.lost or getattr(result, "message", "")
            self._redo(job, why, finished.submitted.job_id, result)
        else:
            self._finish(job, result)

    def _redo(self, job: Job, why: str, replaces: str, result: JobResult | None = None) -> None:
        """Resubmit a job the infrastructure failed; past max_resubmits, its failure is the result (the one it
        recorded, else one recorded now)."""
        if job.attempt < self.max_resubmits:
            self.note(f"  {job.key}: infrastructure failure ({why}); resubmitted "
                      f"({job.attempt + 1} of {self.max_resubmits})")
            self._submit([replace(job, attempt=job.attempt + 1, replaces=replaces)])
            return
        result = result or lost(job, why)
        if isinstance(result, Skipped):
            self._watch(job)
        else:
            self._finish(job, result)

    def _watch(self, job: Job) -> None:
        self.note(f"  {job.key}: another job holds it; waiting for that job to end")
        self.watched.append(job)

    def _look_at_watched(self) -> None:
        for job in list(self.watched):
            settled = job.settled()
            if settled is None and job.held_elsewhere():
                continue
            self.watched.remove(job)
            if settled is not None:
                self._finish(job, settled)
            else:
                self._redo(job, "the job that held it ended without finishing it", replaces="")

    def _finish(self, job: Job, result: JobResult) -> None:
        self.results[job.key] = result
        self.on_done(job, result)
