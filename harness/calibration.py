"""Per-node calibration: a few runs of the baseline train.py on each node before its first session of a run.

Training stops on a time budget, so a faster node gives one train.py more steps in the same budget: across nodes of
different speed, the node can pass for skill. Each node that runs sessions of a run therefore first trains the
profile's baseline `runs` times on CALIBRATION_SEEDS (seeds no session or verification uses), in sandboxes exactly
like verification runs (harness/verify.py Verifier.baseline_run), and writes what it measured to
<run_dir>/nodes/<host>.json: its speed (steps in the budget, tokens/s) and its noise (σ of val_bpb over the runs),
the nodes table of the store and the leaderboard's noise floor per node. The slots of one node wait for one
calibration (a file lock), so no session trains next to it. A run that failed, also for the infrastructure, is
recorded and never raised: the session goes on.

The analysis (harness/model.py node_adjusted) uses the node of each verified pair, not these runs: baseline and
final of a pair train back to back on one slot, so the node's speed cancels in their difference to first order.
"""

from __future__ import annotations

import math
import shutil
import socket
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.profile import Profile
from harness.config import CALIBRATION_SEED
from harness.data import DataPaths
from harness.lease import folder_lock
from harness.runtime.base import Runtime
from harness.store import read_json, write_json
from harness.verify import InfraError, RunRecord, Verifier

CALIBRATION_SPLITS = ("val",)   # the hidden test split is for verification; the noise floor is the val shard's


@dataclass(frozen=True)
class CalibrationSummary:
    runs: int
    runs_ok: int
    steps_mean: float | None               # over the runs that ended ok
    tokens_per_second_mean: float | None
    val_bpb_mean: float | None
    val_bpb_sd: float | None               # run-to-run σ (ddof 1): the node's noise floor; None below two ok runs


@dataclass(frozen=True)
class InfraFailure:
    seed: int
    message: str


@dataclass(frozen=True)
class NodeCalibration:
    node: str
    profile_hash: str
    runs: list[RunRecord]
    summary: CalibrationSummary
    infra_failures: list[InfraFailure] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> NodeCalibration:
        return cls(d["node"], d["profile_hash"], [RunRecord(**r) for r in d["runs"]],
                   CalibrationSummary(**d["summary"]), [InfraFailure(**f) for f in d.get("infra_failures", [])])


def calibration_seeds(runs: int) -> tuple[int, ...]:
    return tuple(CALIBRATION_SEED + i for i in range(runs))


def node_name() -> str:
    """This node's name, as the verifier records it on every run (RunRecord.node)."""
    return socket.gethostname()


def ensure_calibrated(run_dir: Path, profile: Profile, data: DataPaths, runtime: Runtime, gpu: int | None,
                      runs: int) -> NodeCalibration | None:
    """This node's calibration for the run: read when it was made, else made now (the node's other slots wait for
    it); None when runs == 0."""
    if runs == 0:
        return None
    node = node_name()
    path = run_dir / "nodes" / f"{node}.json"
    if path.exists():
        return NodeCalibration.from_dict(read_json(path))
    with folder_lock(run_dir / "nodes" / node):
        if path.exists():
            return NodeCalibration.from_dict(read_json(path))
        calibration = calibrate(run_dir, profile, data, runtime, gpu, runs)
        write_json(path, calibration)
        return calibration


def calibrate(run_dir: Path, profile: Profile, data: DataPaths, runtime: Runtime, gpu: int | None,
              runs: int) -> NodeCalibration:
    """Train the baseline `runs` times on this node (its files under nodes/<host>/, an interrupted one's discarded)."""
    folder = run_dir / "nodes" / node_name()
    shutil.rmtree(folder, ignore_errors=True)
    verifier = Verifier(run_dir / "cache", profile, data, runtime, calibration_seeds(runs), CALIBRATION_SPLITS)
    records, failures = [], []
    for seed in verifier.seeds:
        try:
            records.append(verifier.baseline_run(folder / "runs" / f"seed-{seed}" / "baseline", seed, gpu))
        except InfraError as e:
            failures.append(InfraFailure(seed, str(e)))
    return NodeCalibration(verifier.node, profile.hash, records, summarize(records, runs), failures)


def summarize(records: list[RunRecord], runs: int) -> CalibrationSummary:
    ok = [r for r in records if r.status == "ok"]
    bpb = [r.trusted["val"] for r in ok if r.trusted and r.trusted.get("val") is not None]
    return CalibrationSummary(
        runs=runs, runs_ok=len(ok), steps_mean=_mean([r.steps for r in ok]),
        tokens_per_second_mean=_mean([r.tokens_per_second for r in ok]), val_bpb_mean=_mean(bpb),
        val_bpb_sd=statistics.stdev(bpb) if len(bpb) >= 2 else None)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(known) if known else None
