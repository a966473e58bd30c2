"""The Slurm executor, through submitit: one job per session or verification pair, submitted as job arrays.

Each job asks for its time limit (a session: the [slurm] time_limit, else its budget + SLURM_MARGIN_MIN; a pair:
what its attempts can take), `--gres=gpu:N` when the profile needs a GPU, and the config's partition and account.
submitit keeps its scripts, logs and pickled results in <run_dir>/slurm/; the jobs write their results into the
shared run folder, so <run_dir> must be on a filesystem every node sees (with working flock, for the leases).

Whether a job still lives is asked of squeue (submitit's own state comes from sacct, which a cluster without
accounting does not answer): a job that left the queue, or sits in a final state, without a result was lost.
"""

from __future__ import annotations

import getpass
import math
import subprocess
import time
from pathlib import Path

from bench.launch import EVAL_ALLOWANCE_S, STARTUP_ALLOWANCE_S
from harness.config import SlurmSettings
from harness.executors.base import Executor, Finished, Submitted
from harness.jobs import Job, PairJob, run_job
from harness.verify import EXEC_MARGIN_S, MAX_ATTEMPTS

SLURM_MARGIN_MIN = 30      # a session job's time limit beyond its budget: workspace, collection, a slow start
POLL_S = 5.0               # between looks at the queue
ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
         "SUSPENDED", "SIGNALING", "STAGE_OUT"}


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, folder: Path, settings: SlurmSettings, run_id: str):
        self.folder, self.settings, self.run_id = folder, settings, run_id
        self._queue: tuple[float, dict[str, str] | None] = (-math.inf, None)

    def _states(self) -> dict[str, str] | None:
        """queue_states(), asked at most once per POLL_S (a resume attaches to every job of the run)."""
        if time.monotonic() - self._queue[0] >= POLL_S:
            self._queue = (time.monotonic(), queue_states())
        return self._queue[1]

    def submit(self, jobs: list[Job]) -> list[Submitted]:
        """One array per group of jobs that ask for the same resources."""
        import submitit   # here: only a Slurm run needs it
        groups: dict[tuple, list[Job]] = {}
        for job in jobs:
            groups.setdefault(self._resources(job), []).append(job)
        submitted: dict[int, Submitted] = {}
        self._queue = (-math.inf, None)   # the next look at the queue must see these jobs
        for resources, group in groups.items():
            executor = submitit.AutoExecutor(folder=self.folder, cluster="slurm")   # parameters of this group only
            executor.update_parameters(**dict(resources))
            with executor.batch():
                handles = [executor.submit(run_job, job) for job in group]
            submitted |= {id(job): Submitted(job, handle.job_id, handle) for job, handle in zip(group, handles)}
        return [submitted[id(job)] for job in jobs]

    def _resources(self, job: Job) -> tuple:
        minutes = pair_minutes(job) if isinstance(job, PairJob) else \
            self.settings.time_limit or math.ceil(job.spec.budget.seconds / 60) + SLURM_MARGIN_MIN
        resources = {"name": f"arbench-{self.run_id}", "timeout_min": minutes,
                     "slurm_partition": self.settings.partition, "slurm_account": self.settings.account,
                     "cpus_per_task": self.settings.cpus_per_job,
                     "slurm_gres": f"gpu:{self.settings.gpus_per_job}" if job.profile.needs_gpu else None}
        return tuple(sorted((k, v) for k, v in resources.items() if v is not None))

    def wait(self, submitted: list[Submitted], timeout_s: float) -> list[Finished]:
        deadline = time.monotonic() + timeout_s
        while True:
            states = self._states()
            finished = [f for s in submitted if (f := self._finished(s, states)) is not None]
            if finished or time.monotonic() >= deadline:
                return finished
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def _finished(self, submitted: Submitted, states: dict[str, str] | None) -> Finished | None:
        handle = submitted.handle
        if handle.paths.result_pickle.exists():
            try:
                return Finished(submitted, result=handle.result())
            except Exception as e:   # the worker raised (run_job records what it can; this is the rest)
                return Finished(submitted, lost=f"the job failed: {' '.join(str(e).strip().splitlines()[-1:])}")
        state = None if states is None else states.get(submitted.job_id)
        if states is None or state in ALIVE:   # alive, or the queue did not answer
            return None
        if handle.paths.result_pickle.exists():   # it ended between the two looks
            return self._finished(submitted, states)
        return Finished(submitted, lost=f"Slurm job {submitted.job_id} ended without a result "
                                        f"({state or 'gone from the queue'}; log {handle.paths.stderr})")

    def attach(self, job: Job, job_id: str) -> Submitted | None:
        if (self._states() or {}).get(job_id) not in ALIVE:
            return None
        import submitit
        return Submitted(job, job_id, submitit.SlurmJob(folder=self.folder, job_id=job_id))

    def cancel(self, submitted: list[Submitted]) -> None:
        if submitted:
            subprocess.run(["scancel", *[s.job_id for s in submitted]], check=False, capture_output=True)


def queue_states() -> dict[str, str] | None:
    """job id -> state of this user's jobs in Slurm's queue (array tasks one by one); None when squeue did not
    answer (a busy controller: ask again later, never take it for jobs gone)."""
    try:
        listing = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"], capture_output=True,
                                 text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(line.split(maxsplit=1) for line in listing.splitlines() if line.strip())


def pair_minutes(job: PairJob) -> int:
    """A pair's time limit: every attempt's two runs at the launcher's default limits."""
    run_s = job.profile.time_budget + STARTUP_ALLOWANCE_S + EVAL_ALLOWANCE_S + EXEC_MARGIN_S
    return math.ceil(MAX_ATTEMPTS * 2 * run_s / 60) + SLURM_MARGIN_MIN
