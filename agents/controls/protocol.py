"""The program.md loop, done for real by a non-LLM control inside its workspace (cwd).

Run 0 is the unmodified baseline. Each later experiment: propose an edit, write it, `git commit`,
`python train.py > run.log 2>&1` (killed at 2x TIME_BUDGET plus a startup allowance), read `^val_bpb:` and
`^peak_vram_mb:`, append a row to the untracked results.tsv, keep the commit if val_bpb improved, else
`git reset --hard HEAD~1`. It loops until killed or until results.tsv holds max_experiments rows (baseline included).

A control only decides what to try (`propose`) and may learn from the result (`observe`: an ask/tell seam that
a Bayesian optimiser plugs into). A kill at any point leaves a consistent workspace: rows are appended in one
write, and the training process is killed with the control (same process group; SIGTERM is turned into an exit).

Like every agent, a control imports only bench/ (results.tsv's format: bench/contracts.py) and agents/, never the
harness that grades it; its git calls go through `git` below.
"""

from __future__ import annotations

import math
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.contracts import RESULTS_FILE, ExperimentStatus, ResultRow, header_line
from bench.profile import load_profile

STARTUP_ALLOWANCE_S = 120.0  # imports, data loading and the final evaluation, on top of 2x the training budget
RUN_LOG = "run.log"


@dataclass(frozen=True)
class Proposal:
    description: str
    edits: dict[str, str] = field(default_factory=dict)   # path -> new text; empty re-runs HEAD as it is
    params: dict[str, Any] = field(default_factory=dict)  # hyperparameters set, for controls that learn


@dataclass(frozen=True)
class Outcome:
    val_bpb: float | None  # None: crashed, timed out or no summary
    memory_gb: float


class Control:
    def __init__(self, workspace: Path, seed: int = 0, max_experiments: int | None = None):
        self.workspace = workspace
        self.rng = random.Random(seed)
        self.max_experiments = max_experiments
        profile = load_profile(workspace / "profile.toml")
        self.timeout_s = 2 * profile.time_budget + STARTUP_ALLOWANCE_S
        self.max_seq_len = int(profile.task["max_seq_len"])
        self.best = math.inf
        self.rows = 0

    # --- what a control decides ----------------------------------------------------------------------------

    def propose(self) -> Proposal:
        raise NotImplementedError

    def observe(self, proposal: Proposal, outcome: Outcome, status: ExperimentStatus) -> None:
        """Told every result; the default control does not learn."""

    # --- the protocol --------------------------------------------------------------------------------------

    def run(self) -> None:
        results = self.workspace / RESULTS_FILE
        if not results.exists():
            results.write_text(header_line())
        self.experiment(Proposal("baseline"), baseline=True)
        while self.max_experiments is None or self.rows < self.max_experiments:
            self.experiment(self.propose())

    def experiment(self, proposal: Proposal, baseline: bool = False) -> None:
        if not baseline:
            self.commit(proposal)
        outcome = self.train()
        status = self.judge(outcome)
        self.log(ResultRow(self.head(), outcome.val_bpb or 0.0, outcome.memory_gb, status, proposal.description))
        self.observe(proposal, outcome, status)
        if status != "keep" and not baseline:
            git(self.workspace, "reset", "--hard", "HEAD~1")

    def commit(self, proposal: Proposal) -> None:
        for path, text in proposal.edits.items():
            (self.workspace / path).write_text(text)
        if proposal.edits:
            git(self.workspace, "add", "--", *proposal.edits)
        git(self.workspace, "-c", f"user.name=arbench {type(self).__name__}", "-c", "user.email=control@arbench",
            "commit", "-q", "--allow-empty", "-m", proposal.description)

    def train(self) -> Outcome:
        with open(self.workspace / RUN_LOG, "wb") as log:
            proc = subprocess.Popen([sys.executable, "train.py"], cwd=self.workspace, stdout=log, stderr=subprocess.STDOUT)
            try:
                proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                pass
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return read_run_log((self.workspace / RUN_LOG).read_text(errors="replace"))

    def judge(self, outcome: Outcome) -> ExperimentStatus:
        if outcome.val_bpb is None:
            return "crash"
        if outcome.val_bpb < self.best:
            self.best = outcome.val_bpb
            return "keep"
        return "discard"

    def log(self, row: ResultRow) -> None:
        with open(self.workspace / RESULTS_FILE, "a") as f:
            f.write(row.to_line())
            f.flush()
            os.fsync(f.fileno())
        self.rows += 1

    def head(self) -> str:
        return git(self.workspace, "rev-parse", "--short=7", "HEAD")

    def read(self, path: str) -> str:
        return (self.workspace / path).read_text()


def git(workspace: Path, *args: str) -> str:
    """`git -C workspace ARGS`, its output stripped; RuntimeError with git's message when it fails."""
    result = subprocess.run(["git", "-C", str(workspace), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {workspace}: {result.stderr.strip()}")
    return result.stdout.strip()


def read_run_log(text: str) -> Outcome:
    """`grep "^val_bpb:\\|^peak_vram_mb:" run.log`, as program.md reads it."""
    val_bpb, peak_mb = _grep(text, "val_bpb"), _grep(text, "peak_vram_mb")
    if val_bpb is None or not math.isfinite(val_bpb):
        return Outcome(None, 0.0)
    return Outcome(val_bpb, round((peak_mb or 0.0) / 1024, 1))


def _grep(text: str, key: str) -> float | None:
    match = re.search(rf"^{key}:\s*(\S+)", text, re.MULTILINE)
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None
