"""`arbench check`: is a run folder's store consistent? Reads only; each problem is one line naming its path.

  sessions      every session folder is complete (session.json, manifest.json, experiments.json, findings.json once
                final; verification.json readable where it exists) or explicitly unfinished: running under a live
                lease, ended by an infrastructure failure (redone on resume), or set aside as <id>.interrupted-<n>
  leases        only on unfinished sessions; one whose job is dead is stale (harness/lease.py)
  tables        tables/*.parquet equal what the folders rebuild (harness/store.py rebuild_tables, in memory);
                no duplicate rows (a session id; a results.tsv row idx per session; a verification role × seed ×
                split per session), no row of a session that has no folder
  cache         each verification pair (harness/verify.py) sits under the hashes of what it trained: pair.json's
                hashes and seed, its runs' train_py_hash, and the train.py and profile.toml kept in its attempts

A store without tables/ (a run before its first analysis) has no tables to check. Experiments rows are keyed by
their results.tsv row (idx), not by commit: an agent may log one commit twice (a re-run), which is its record, not
a store fault.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from bench.profile import ProfileError, parse_profile
from harness.lease import LEASE_FILE, lease_alive, read_lease
from harness.session import FINAL_STATUSES, SessionStatus
from harness.status import planned_sessions
from harness.store import TABLES, read_json, rebuild_tables, session_dirs
from harness.workspace import sha256_bytes

FINAL_FILES = ("session.json", "manifest.json", "experiments.json", "findings.json")
ROW_KEYS = {"sessions": ["session_id"], "experiments": ["session_id", "idx"],
            "verifications": ["session_id", "role", "seed", "split"]}


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def check_store(run_dir: Path) -> list[Problem]:
    """Every inconsistency of the store in run_dir; [] when it is consistent."""
    return _check_sessions(run_dir) + _check_tables(run_dir) + _check_cache(run_dir)


# ---------------------------------------------------------------------------
# Session folders and leases
# ---------------------------------------------------------------------------

def _check_sessions(run_dir: Path) -> list[Problem]:
    root = run_dir / "sessions"
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    run = read_json(run_dir / "run.json")
    planned = planned_sessions(run) if "config" in run else {}
    now = time.time()
    problems = [Problem(folder, "not a session of this run's plan (run.json's agents × repeats)")
                for folder in folders if planned and folder.name.split(".interrupted-")[0] not in planned]
    return problems + [problem for folder in folders
                       for problem in (_check_set_aside(folder, now) if ".interrupted-" in folder.name
                                       else _check_session(folder, now))]


def _check_set_aside(folder: Path, now: float) -> list[Problem]:
    lease = read_lease(folder)
    if lease is not None and lease_alive(lease, now):
        return [Problem(folder / LEASE_FILE, f"a live lease ({lease.job_id}) in a set-aside folder: its job writes "
                                             "where nothing reads")]
    return []


def _check_session(folder: Path, now: float) -> list[Problem]:
    try:
        record = read_json(folder / "session.json")
    except ValueError as e:
        return [Problem(folder / "session.json", f"unreadable: {e}")]
    problems = _check_lease(folder, record, now)
    if record is None:
        if not problems and not (folder / LEASE_FILE).exists():
            problems.append(Problem(folder, "no session.json and no live lease (a start that was killed; "
                                            "`arbench run` redoes it)"))
        return problems
    status = record.get("status")
    if record.get("session_id") != folder.name:
        problems.append(Problem(folder / "session.json", f"session_id {record.get('session_id')!r} in folder "
                                                         f"{folder.name!r}"))
    if status not in get_args(SessionStatus):
        problems.append(Problem(folder / "session.json", f"unknown status {status!r}"))
    elif status == "running" and not (folder / LEASE_FILE).exists():
        problems.append(Problem(folder, "unfinished without a lease (its job is gone; `arbench run` redoes it)"))
    if status in FINAL_STATUSES:
        problems += _check_final(folder, record)
    return problems + _check_readable(folder / "verification.json", dict)


def _check_lease(folder: Path, record: dict | None, now: float) -> list[Problem]:
    path = folder / LEASE_FILE
    if not path.exists():
        return []
    lease = read_lease(folder)
    if lease is None:
        return [Problem(path, "unreadable lease")]
    if record is not None and record.get("status") in FINAL_STATUSES:
        return [Problem(path, f"a lease ({lease.job_id}) on a finished session ({record['status']})")]
    if not lease_alive(lease, now):
        return [Problem(path, f"stale lease: job {lease.job_id} ({lease.executor}) on {lease.host}, pid {lease.pid}, "
                              f"last heartbeat {now - lease.heartbeat_at:.0f} s ago; `arbench run` takes it over")]
    return []


def _check_final(folder: Path, record: dict) -> list[Problem]:
    problems = [Problem(folder / name, "missing in a finished session")
                for name in FINAL_FILES if not (folder / name).exists()]
    problems += [p for name, kind in (("manifest.json", dict), ("findings.json", list), ("experiments.json", list))
                 for p in _check_readable(folder / name, kind)]
    if problems:
        return problems
    n = len(read_json(folder / "experiments.json"))
    if n != record.get("n_experiments"):
        problems.append(Problem(folder / "experiments.json", f"{n} experiments, session.json says "
                                                             f"{record.get('n_experiments')}"))
    return problems


def _check_readable(path: Path, kind: type) -> list[Problem]:
    try:
        data = read_json(path)
    except ValueError as e:
        return [Problem(path, f"unreadable: {e}")]
    if data is not None and not isinstance(data, kind):
        return [Problem(path, f"holds a {type(data).__name__}, not a {kind.__name__}")]
    return []


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

def _check_tables(run_dir: Path) -> list[Problem]:
    import pandas as pd
    out = run_dir / "tables"
    if not out.is_dir():
        return []
    try:
        rebuilt = rebuild_tables(run_dir)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [Problem(run_dir / "sessions", f"the folders do not rebuild into tables: {type(e).__name__}: {e}")]
    folder_ids = {folder.name for folder in session_dirs(run_dir)}
    problems = []
    for name in TABLES:
        path = out / f"{name}.parquet"
        if not path.exists():
            problems.append(Problem(path, "missing (`arbench analyze` rebuilds the tables)"))
            continue
        stored = pd.read_parquet(path)
        problems += _duplicates(path, stored, ROW_KEYS.get(name)) + _orphans(path, stored, folder_ids)
        problems += _duplicates(run_dir / "sessions", rebuilt[name], ROW_KEYS.get(name))
        difference = _difference(stored, pd.read_parquet(io.BytesIO(rebuilt[name].to_parquet(index=False))))
        if difference:
            problems.append(Problem(path, f"differs from what the folders rebuild: {difference} "
                                          "(`arbench analyze` rebuilds the tables)"))
    return problems


def _duplicates(path: Path, frame, key: list[str] | None) -> list[Problem]:
    if not key or frame.empty or not set(key) <= set(frame.columns):
        return []
    repeated = frame[frame.duplicated(key, keep="first")]
    return [Problem(path, f"duplicate row {dict(zip(key, row))}")
            for row in repeated[key].itertuples(index=False)]


def _orphans(path: Path, frame, folder_ids: set[str]) -> list[Problem]:
    if frame.empty or "session_id" not in frame.columns:
        return []
    return [Problem(path, f"rows of session {sid!r}, which has no folder")
            for sid in sorted(set(frame["session_id"]) - folder_ids)]


def _difference(stored, rebuilt) -> str | None:
    """None when the frames are equal, else what differs first."""
    if list(stored.columns) != list(rebuilt.columns):
        extra, lacking = set(stored.columns) - set(rebuilt.columns), set(rebuilt.columns) - set(stored.columns)
        return f"columns only in the table {sorted(extra)}, only in the folders {sorted(lacking)}" if extra | lacking \
            else "columns in another order"
    if len(stored) != len(rebuilt):
        return f"{len(stored)} rows, the folders make {len(rebuilt)}"
    for column in stored.columns:
        a, b = stored[column], rebuilt[column]
        if not a.equals(b):
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if not _same(x, y)), None)
            if first is not None:
                return (f"column {column!r}, row {first}: {a.iloc[first]!r} in the table, {b.iloc[first]!r} in "
                        "the folders")
    return None


def _same(x, y) -> bool:
    try:
        return bool(x == y) or bool(x != x and y != y)   # NaN, None and pd.NA equal only their own kind
    except (ValueError, TypeError):   # array cells
        return str(x) == str(y)


# ---------------------------------------------------------------------------
# Verification cache
# ---------------------------------------------------------------------------

def _check_cache(run_dir: Path) -> list[Problem]:
    return [problem for path in sorted((run_dir / "cache").glob("*/pairs/*/seed-*/pair.json"))
            for problem in _check_pair(path)]


def _check_pair(path: Path) -> list[Problem]:
    folder = path.parent
    baseline_hash, _, final_hash = folder.parent.name.partition("-")
    try:
        pair = read_json(path)
        attempts = pair["attempts"]
    except (ValueError, KeyError, TypeError) as e:
        return [Problem(path, f"unreadable: {type(e).__name__}: {e}")]
    said = (pair.get("baseline_hash"), pair.get("final_hash"), f"seed-{pair.get('seed')}")
    problems = [] if said == (baseline_hash, final_hash, folder.name) else \
        [Problem(path, f"says {said[0]}-{said[1]}/{said[2]}, its folder is {folder.parent.name}/{folder.name}")]
    expected = {"baseline": baseline_hash, "final": final_hash}
    for n, attempt in enumerate(attempts, 1):
        for role, run in attempt.get("runs", {}).items():
            work = folder / f"attempt-{n}" / role
            if run.get("train_py_hash") != expected.get(role):
                problems.append(Problem(path, f"attempt {n} {role}: train_py_hash {run.get('train_py_hash')}, "
                                              f"the folder says {expected.get(role)}"))
            problems += _check_kept_file(work / "train.py", expected.get(role),
                                         lambda data: sha256_bytes(data)[:16])
            problems += _check_kept_file(work / "profile.toml", folder.parents[2].name, _profile_hash)
    return problems


def _check_kept_file(path: Path, expected: str | None, hash_of) -> list[Problem]:
    if not path.exists():
        return [Problem(path, "missing")]
    actual = hash_of(path.read_bytes())
    return [] if actual == expected else [Problem(path, f"hashes to {actual}, its folder says {expected}")]


def _profile_hash(data: bytes) -> str:
    try:
        return parse_profile(data.decode(errors="replace"), "a cached profile.toml", "cached").hash
    except ProfileError as e:
        return f"unparseable ({e})"
