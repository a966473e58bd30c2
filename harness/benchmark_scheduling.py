"""Scheduling overhead per session, for the local pool and for Slurm: submit to start (the job queued, its worker
started, the lease taken, the runtime and the data found, the session folder made) and end to collected (the
session's record written to the harness holding its result), against the session's budget.

Sessions of noop (one baseline training each, then exit) in the process runtime, no calibration, no verification,
all submitted at once with a slot each (the local pool gets one per session; keep --sessions within the cluster's free
CPUs, or the figure holds queueing too); Slurm only where sbatch answers (`.ci/slurm.sh` starts a single-node
cluster).

    .venv/bin/python -m harness.benchmark_scheduling [--sessions N]     (also printed by `make bench`)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.config import RunConfig, parse_config
from harness.executors import make_executor
from harness.executors.dispatch import Dispatch, Journal
from harness.jobs import Placement, SessionJob
from harness.run import plan
from harness.store import read_json

BUDGET_S = 60.0     # each session's budget; noop exits long before it (its wall time is one training run)


@dataclass(frozen=True)
class Overhead:
    executor: str
    sessions: int
    to_start_s: list[float]      # per session: journal's submitted_at -> session.json started_at
    to_collect_s: list[float]    # per session: session.json ended_at -> the harness holds the result
    wall_s: list[float]          # per session: started_at -> ended_at

    def line(self) -> str:
        med = statistics.median
        return (f"{self.executor:>6}: {self.sessions} sessions; submit to start median {med(self.to_start_s):.2f}s "
                f"(max {max(self.to_start_s):.2f}s), end to collected median {med(self.to_collect_s):.2f}s "
                f"(max {max(self.to_collect_s):.2f}s); session wall median {med(self.wall_s):.1f}s; overhead "
                f"{(med(self.to_start_s) + med(self.to_collect_s)) / BUDGET_S:.1%} of a {BUDGET_S:.0f}s budget, "
                f"{(med(self.to_start_s) + med(self.to_collect_s)) / 300:.2%} of the original's 300s")


def measure(executor_name: str, sessions: int, root: Path) -> Overhead:
    config = _config(executor_name, sessions, root)
    run_dir = root / f"run-{executor_name}"
    run_dir.mkdir()
    placement = Placement(run_dir, "process", executor_name, cpus=1)
    executor = make_executor(config, run_dir, [None] * sessions)   # a free slot each: overhead, not queueing
    collected: dict[str, float] = {}
    try:
        Dispatch(executor, Journal(run_dir), 0, lambda job, result: collected.__setitem__(job.key, time.time())) \
            .run([SessionJob(spec, placement) for spec in plan(config)])
    finally:
        executor.close()
    journal = Journal(run_dir).read()
    records = {key: read_json(run_dir / "sessions" / key / "session.json") for key in collected}
    return Overhead(executor_name, sessions,
                    [records[k]["started_at"] - journal[k]["submitted_at"] for k in collected],
                    [collected[k] - records[k]["ended_at"] for k in collected],
                    [records[k]["ended_at"] - records[k]["started_at"] for k in collected])


def _config(executor: str, sessions: int, root: Path) -> RunConfig:
    return parse_config({"run_id": "scheduling", "profile": "cpu-tiny", "agents": ["noop"], "repeats": sessions,
                         "runtime": "process", "executor": executor, "max_resubmits": 0,
                         "budget": {"seconds": BUDGET_S, "experiments": 1}, "calibration": {"runs": 0}},
                        where=str(root))


def report(sessions: int = 2) -> None:
    executors = ["local"] + (["slurm"] if shutil.which("sbatch") else [])
    print("scheduling overhead per session (noop, process runtime):"
          + ("" if "slurm" in executors else " Slurm skipped: no sbatch on this host (.ci/slurm.sh starts one)"))
    # under /var/tmp, not /tmp: a Slurm job may get a private /tmp; the run folder must be the same path on the node
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="arbench-scheduling-") as tmp:
        for name in executors:
            print(measure(name, sessions, Path(tmp)).line(), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.benchmark_scheduling", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2)
    report(parser.parse_args(argv).sessions)


if __name__ == "__main__":
    main()
