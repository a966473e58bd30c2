"""Collection: one ExperimentRecord per results.tsv row, matched to its commit and to a real run.

Three sources, none trusted on its own:
  results.tsv   what the agent claims (program.md format: commit, val_bpb, memory_gb, status, description;
                read by header name, so a fork's extra columns are kept and its missing optional ones are empty)
  git           every commit the agent made, discarded ones included (reflog and unreachable objects)
  run ledger    one JSON record per `python train.py`, written on the host by harness/ledger.py
A row is matched to the commit its short hash names, and to a ledger run started at that commit (HEAD as the
host read it when the run connected) that is not forged (its peer a real `python train.py` of the workspace) and
not merely observed; a record without HEAD (git failed) falls back to a run of that commit's train.py started
between its commit and the next row's. A row's val_bpb is held to what evaluate_bpb returned when the ledger has it.
This module only gathers and matches; harness/integrity.py judges. The parser is tolerant: a malformed
row is returned as a RowProblem, never raised.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.ledger import SCHEMA_VERSION as LEDGER_SCHEMA_VERSION
from harness.workspace import file_at, git, sha256_bytes

RESULTS_FILE = "results.tsv"
RESULTS_HEADER = ("commit", "val_bpb", "memory_gb", "status", "description")   # what our sessions write
REQUIRED_COLUMNS = ("commit", "val_bpb", "status")    # a fork may drop the others and add its own

Status = Literal["keep", "discard", "crash"]
RunStatus = Literal["ok", "crash", "nan", "timeout", "missing"]
STATUSES: tuple[Status, ...] = ("keep", "discard", "crash")


# ---------------------------------------------------------------------------
# results.tsv
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ResultRow:
    commit: str                   # short hash as written; "" when the baseline row names none (a fork wrote "baseline")
    val_bpb: float
    memory_gb: float | None       # None when the file has no memory_gb column or the cell is not a number
    status: Status
    description: str
    extra: dict[str, str] = field(default_factory=dict)   # columns beyond the original five, by header name
    line_no: int = field(default=0, compare=False)        # 1-based line of results.tsv (0: not read from a file)

    def to_line(self) -> str:
        description = " ".join(self.description.split())  # no tabs or newlines inside the column
        return f"{self.commit}\t{self.val_bpb:.6f}\t{self.memory_gb or 0.0:.1f}\t{self.status}\t{description}\n"


@dataclass(frozen=True)
class RowProblem:
    line_no: int  # 1-based line of results.tsv; 0 for the file as a whole
    line: str
    reason: str


def header_line() -> str:
    return "\t".join(RESULTS_HEADER) + "\n"


def parse_results(text: str) -> tuple[list[ResultRow], list[RowProblem]]:
    """Rows of results.tsv, columns found by header name (forks add columns, in any position). Lines are
    tab-separated, csv-style quoting allowed ("a\\tb" is one field); CRLF and trailing whitespace are ignored."""
    lines = [line.rstrip() for line in text.removeprefix("\ufeff").split("\n")]
    columns = _split(lines[0]) if lines else []
    columns = [c.strip().lower() for c in columns]
    if reason := _header_problem(columns):
        return [], [RowProblem(1, lines[0] if lines else "", reason)]
    rows, problems = [], []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row_or_reason = _parse_row(columns, _split(line), line_no, baseline=not rows and not problems)
        if isinstance(row_or_reason, ResultRow):
            rows.append(row_or_reason)
        else:
            problems.append(RowProblem(line_no, line, row_or_reason))
    return rows, problems


def _split(line: str) -> list[str]:
    return next(csv.reader([line], delimiter="\t", quotechar='"'), [])


def _header_problem(columns: list[str]) -> str | None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        return (f"header lacks the column(s) {', '.join(missing)} (it has: {', '.join(columns) or 'nothing'}; "
                f"expected tab-separated {', '.join(RESULTS_HEADER)} and optional others)")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    return f"header names the column(s) {', '.join(repeated)} more than once" if repeated else None


def _parse_row(columns: list[str], fields: list[str], line_no: int, baseline: bool) -> ResultRow | str:
    """A row; missing trailing cells of optional columns are empty (an editor strips a trailing tab). The baseline
    row (the first) may name no commit: forks write `baseline` there."""
    if len(fields) > len(columns):
        return f"{len(fields)} tab-separated fields, the header has {len(columns)} (quote a description with a tab)"
    cells = dict(zip(columns, (f.strip() for f in fields)))
    if missing := [c for c in REQUIRED_COLUMNS if c not in cells]:
        return f"{len(fields)} tab-separated fields: no {', '.join(missing)}"
    commit, val_bpb, status = cells["commit"].lower(), cells["val_bpb"], cells["status"].lower()
    if not (4 <= len(commit) <= 40 and all(c in "0123456789abcdef" for c in commit)):
        if not baseline:
            return f"commit {cells['commit']!r} is not a hex hash"
        commit = ""
    bpb = _number(val_bpb)
    if bpb is None:
        return f"val_bpb {val_bpb!r} is not a number"
    if status not in STATUSES:
        return f"status {cells['status']!r} is not one of {', '.join(STATUSES)}"
    extra = {c: v for c, v in cells.items() if c not in RESULTS_HEADER}
    return ResultRow(commit, bpb, _number(cells.get("memory_gb", "")), status, cells.get("description", ""), extra,
                     line_no)


def _number(text: str) -> float | None:
    """A finite float, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_results(workspace: Path) -> tuple[list[ResultRow], list[RowProblem]]:
    path = workspace / RESULTS_FILE
    if not path.is_file():
        return [], [RowProblem(0, "", f"{RESULTS_FILE} is missing")]
    return parse_results(path.read_text(errors="replace"))


# ---------------------------------------------------------------------------
# Run ledger
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LedgerRecord:
    """One connection to the host's run ledger (harness/ledger.py): measured on the host, except `summary`,
    `status` and `returned_val_bpb`, which are the run's own word."""
    path: str
    pid: int
    forged: bool                      # the peer was not a python running the workspace's train.py
    forged_reason: str | None
    observed_only: bool               # seen running train.py in /proc, never connected: nothing is known of it
    train_py_sha256: str | None       # host-computed at connect, like the two below
    head_commit: str | None
    dirty: bool | None                # train.py differed from HEAD's
    protected_sha256: dict[str, str | None]  # prepare.py, profile.toml as the run found them
    started_at: float                 # host clock: connect
    ended_at: float | None            # host clock: the process was gone; None when it outlived the session
    seed: int | None
    status: RunStatus
    summary: dict[str, Any]           # what the run printed
    returned_val_bpb: float | None    # the last value evaluate_bpb(split="val") returned

    @property
    def printed_val_bpb(self) -> float | None:
        value = self.summary.get("val_bpb")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def val_bpb(self) -> float | None:
        """What a results.tsv row is held to: evaluate_bpb's return value when the ledger has it, else the print."""
        return self.returned_val_bpb if self.returned_val_bpb is not None else self.printed_val_bpb


def read_ledger(ledger_dir: Path) -> list[LedgerRecord]:
    """Every readable record of the current schema in ledger_dir, oldest first; other files are skipped."""
    records = [_ledger_record(p) for p in sorted(ledger_dir.glob("*.json"))]
    return sorted((r for r in records if r is not None), key=lambda r: r.started_at)


def _ledger_record(path: Path) -> LedgerRecord | None:
    try:
        raw = json.loads(path.read_text())
        if raw["schema_version"] != LEDGER_SCHEMA_VERSION:
            return None
        client, hashes = dict(raw["client"]), dict(raw["sha256"])
        returned = [e["bpb"] for e in client["evaluations"] if e["split"] == "val"]
        return LedgerRecord(
            path=str(path), pid=int(raw["pid"]), forged=bool(raw["forged"]), forged_reason=raw["forged_reason"],
            observed_only=bool(raw["observed_only"]), train_py_sha256=hashes.get("train.py"),
            head_commit=raw["head_commit"], dirty=raw["dirty"],
            protected_sha256={name: hashes.get(name) for name in ("prepare.py", "profile.toml")},
            started_at=float(raw["started_at"]), ended_at=raw["ended_at"], seed=client.get("seed"),
            status=_run_status(raw["ended_at"], client.get("status")), summary=dict(client.get("summary") or {}),
            returned_val_bpb=float(returned[-1]) if returned else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _run_status(ended_at: float | None, said: Any) -> RunStatus:
    """The status the run reported at exit; a run that ended without one, or outlived the session, was killed."""
    return said if said in ("ok", "crash", "nan", "timeout") and ended_at is not None else "timeout"


def backing_runs(records: list[LedgerRecord]) -> list[LedgerRecord]:
    """The records that may back a results.tsv row: a real `python train.py` that reported to the ledger."""
    return [r for r in records if not r.forged and not r.observed_only]


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
    status: Status
    run_status: RunStatus        # of the matched ledger run; "missing" when none
    training_seconds: float | None
    total_seconds: float | None
    commit_found: bool
    train_py_sha256: str | None  # of train.py at the commit
    run_val_bpb: float | None    # the matched run's evaluate_bpb return value (else what it printed)
    seed: int | None
    run_dirty: bool | None       # the matched run trained a train.py that differed from the commit
    extra_columns: str = "{}"    # the row's columns beyond the original five, as a JSON object


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
    )
