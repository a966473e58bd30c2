"""Collection: one ExperimentRecord per results.tsv row, matched to its commit and to a real run.

Three sources, none trusted on its own:
  results.tsv   what the agent claims (program.md format: commit, val_bpb, memory_gb, status, description;
                read by header name, so a fork's extra columns are kept and its missing optional ones are empty)
  git           every commit the agent made, discarded ones included (reflog and unreachable objects)
  run ledger    one JSON record per `python train.py`, written on the host by harness/ledger.py (bench.contracts)
A row is matched to the commit its short hash names, and to a ledger run started at that commit (HEAD as the
host read it when the run connected) that is not forged (its peer a real `python train.py` of the workspace) and
not merely observed; a record without HEAD (git failed) falls back to a run of that commit's train.py started
between its commit and the next row's. A row's val_bpb is held to what evaluate_bpb returned when the ledger has it.
This module only gathers and matches; harness/integrity.py judges. The results.tsv parser (bench/contracts.py) is
tolerant: a malformed row is returned as a RowProblem, never raised.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.contracts import (RESULTS_FILE, ExperimentStatus, LedgerRecord, ResultRow, RowProblem, RunStatus,
                             parse_results)
from harness.workspace import file_at, git, sha256_bytes

ExperimentRunStatus = Literal[RunStatus, "missing"]   # "missing": no run backs the row


# ---------------------------------------------------------------------------
# results.tsv (the format and its parser: bench/contracts.py)
# ---------------------------------------------------------------------------

def read_results(workspace: Path) -> tuple[list[ResultRow], list[RowProblem]]:
    path = workspace / RESULTS_FILE
    if not path.is_file():
        return [], [RowProblem(0, "", f"{RESULTS_FILE} is missing")]
    return parse_results(path.read_text(errors="replace"))


# ---------------------------------------------------------------------------
# Run ledger
# ---------------------------------------------------------------------------

def read_ledger(ledger_dir: Path) -> list[LedgerRecord]:
    """Every readable record of the current schema in ledger_dir, oldest first; other files are skipped."""
    records = [_ledger_record(p) for p in sorted(ledger_dir.glob("*.json"))]
    return sorted((r for r in records if r is not None), key=lambda r: r.started_at)


def _ledger_record(path: Path) -> LedgerRecord | None:
    try:
        return LedgerRecord.from_json(path.read_text(), path=str(path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def backing_runs(records: list[LedgerRecord]) -> list[LedgerRecord]:
    """The records that may back a results.tsv row: a real `python train.py` that reported to the ledger and was
    let run (not refused at the experiment cap)."""
    return [r for r in records if not r.forged and not r.observed_only and not r.refused]


# ---------------------------------------------------------------------------
# Git
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    time: int  # committer time, seconds


def all_commits(repo: Path) -> dict[str, Commit]:
    """Every commit still in the repository: branches, reflog (discarded experiments) and unreachable ones."""
    shas = set(git(repo, "rev-list", "--all", "--reflog", check=False).split())
    fsck = git(repo, "fsck", "--unreachable", "--no-reflogs", "--no-progress", check=False)
    shas |= {line.split()[2] for line in fsck.splitlines() if line.startswith("unreachable commit ")}
    if not shas:
        return {}
    log = git(repo, "show", "-s", "--format=%H %ct %P", *sorted(shas))
    commits = {}
    for line in log.splitlines():
        sha, time, *parents = line.split()
        commits[sha] = Commit(sha, tuple(parents), int(time))
    return commits


def train_py_hash(repo: Path, sha: str) -> str | None:
    """sha256 of train.py at a commit; None when the commit has none."""
    try:
        return sha256_bytes(file_at(repo, sha, "train.py"))
    except subprocess.CalledProcessError:
        return None


# ---------------------------------------------------------------------------
# Experiments
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ExperimentRecord:
    """A results.tsv row with what git and the ledger say about it (the store adds session_id and agent)."""
    idx: int
    commit: str                  # full hash when found, else the row's text
    parent: str | None
    description: str
    claimed_val_bpb: float
    memory_gb: float | None
    status: ExperimentStatus
    run_status: ExperimentRunStatus   # of the matched ledger run; "missing" when none
    training_seconds: float | None
    total_seconds: float | None
    commit_found: bool
    train_py_sha256: str | None  # of train.py at the commit
    run_val_bpb: float | None    # the matched run's evaluate_bpb return value (else what it printed)
    seed: int | None
    run_dirty: bool | None       # the matched run trained a train.py that differed from the commit
    extra_columns: str = "{}"    # the row's columns beyond the original five, as a JSON object
    started_at: float | None = None   # when the matched run started (host clock): places it in the session's time


def collect(workspace: Path, ledger_dir: Path | None) -> list[ExperimentRecord]:
    rows, _ = read_results(workspace)
    commits = all_commits(workspace)
    resolved = [_resolve(row.commit, commits) for row in rows]
    unused = backing_runs(read_ledger(ledger_dir)) if ledger_dir is not None and ledger_dir.is_dir() else []
    records = []
    for idx, (row, commit) in enumerate(zip(rows, resolved)):
        train_hash = train_py_hash(workspace, commit.sha) if commit else None
        later = [c.time for c in resolved[idx + 1:] if c is not None]
        run = _match_run(row, commit, later[0] if later else None, train_hash, unused)
        if run is not None:
            unused.remove(run)
        records.append(_record(idx, row, commit, train_hash, run))
    return records


def _resolve(short: str, commits: dict[str, Commit]) -> Commit | None:
    matches = [c for sha, c in commits.items() if sha.startswith(short)] if short else []
    return matches[0] if len(matches) == 1 else None


def _match_run(row: ResultRow, commit: Commit | None, next_time: int | None, train_hash: str | None,
               unused: list[LedgerRecord]) -> LedgerRecord | None:
    """A run started at this commit, else (records without HEAD) a run of this commit's train.py started between
    its commit and the next row's (git times are whole seconds, hence the slack); the one that printed the
    claimed val_bpb if any, else the first."""
    if commit is None:
        return None
    end = next_time + 1 if next_time is not None and next_time >= commit.time else float("inf")
    candidates = ([r for r in unused if r.head_commit == commit.sha]
                  or [r for r in unused if r.head_commit is None and r.train_py_sha256 == train_hash
                      and commit.time - 1 <= r.started_at < end])
    exact = [r for r in candidates if r.val_bpb is not None and abs(r.val_bpb - row.val_bpb) <= VAL_BPB_TOLERANCE]
    return (exact or candidates or [None])[0]


VAL_BPB_TOLERANCE = 1e-6 + 1e-12  # results.tsv has 6 decimals; the slack absorbs float rounding


def _record(idx: int, row: ResultRow, commit: Commit | None, train_hash: str | None,
            run: LedgerRecord | None) -> ExperimentRecord:
    summary = run.summary if run else {}
    return ExperimentRecord(
        idx=idx,
        commit=commit.sha if commit else row.commit,
        parent=commit.parents[0] if commit and commit.parents else None,
        description=row.description,
        claimed_val_bpb=row.val_bpb,
        memory_gb=row.memory_gb,
        status=row.status,
        run_status=run.status if run else "missing",
        training_seconds=summary.get("training_seconds"),
        total_seconds=summary.get("total_seconds"),
        commit_found=commit is not None,
        train_py_sha256=train_hash,
        run_val_bpb=run.val_bpb if run else None,
        seed=run.seed if run else None,
        run_dirty=run.dirty if run else None,
        extra_columns=json.dumps(row.extra, sort_keys=True),
        started_at=run.started_at if run else None,
    )
