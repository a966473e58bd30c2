"""The results store. A run directory looks like this:

    <run_dir>/
      run.json                          the run's config as it was run, git revision of the project
      jobs.json                         each job's latest submission: executor, job id, attempt (harness/executors/)
      slurm/                            submitit's scripts, logs and results of the run's Slurm jobs
      gateway/<id>/gateway.log          the LLM gateway of a session whose agent uses it (harness/gateway)
      sessions/<agent>-r<repeat>/       one folder per session: the source of truth
        session.json                    SessionRecord, rewritten atomically after each stage: status, end_reason,
                                        the budgets, the LLM gateway's usage totals, infra_retries
        lease.json                      while a job runs the session: its job id, host, heartbeat (harness/lease.py)
        manifest.json                   provenance: profile hash, runtime/image, agent, host, git revision
        workspace/                      the agent's git repo (branch autoresearch/<tag>)
        home/                           the agent's $HOME, kept across its continues (a CLI's own session files)
        ledger/                         one JSON per training run, written by the host's run ledger (harness/ledger.py)
        agent.log                       everything the agent printed (a CLI's JSON event stream), `[arbench]`
                                        lines where it was continued; a last line says which cap stopped it
        transcript.jsonl, usage.json    the agent's LLM gateway session: every exchange, and the totals (gateway
                                        agents; written by the gateway, never seen by the agent)
        experiments.json                collect: one record per results.tsv row
        findings.json                   integrity findings
        transcript.md                   the session for a person: messages, tool calls and results, tokens, dollars
        verification.json               verify: runs (bpb per role, held-out seed and split), pairs with their
                                        attempts and measurements, findings from the runs (harness/verify.py); or
                                        "error": why the infrastructure could not verify it (retried next run)
      sessions/<id>.interrupted-<n>/    a session killed mid-way, set aside (never deleted) when redone
      cache/<profile_hash>/pairs/<baseline_hash>-<final_hash>/seed-<seed>/
        pair.json                       trusted results of one pair, shared by sessions with the same two train.py
        attempt-<n>/baseline|final/     each run's train.py, launcher result, logs
      nodes/<host>.json                 per-node calibration: the baseline's runs on the node before its first session,
                                        and their summary (harness/calibration.py); nodes/<host>/ holds their files
      tables/*.parquet                  sessions, experiments, verifications, findings, nodes: built from the folders
      leaderboard.md

Every file is written to a temporary name and renamed into place, so a kill never leaves half a record.
Tables are rebuilt from the folders; nothing in a folder is ever overwritten by the tables.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1
TABLES = ("sessions", "experiments", "verifications", "findings", "nodes")


def write_json(path: Path, data: Any) -> None:
    """Atomically write data (a dataclass, a list of them, or plain JSON) to path."""
    payload = _plain(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:   # a full disk, a kill: the old file stays whole and no temporary is left beside it
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        return default
    return json.loads(path.read_text())


def _plain(data: Any) -> Any:
    if is_dataclass(data):
        return asdict(data)
    if isinstance(data, (list, tuple)):
        return [_plain(d) for d in data]
    return data


def session_dirs(run_dir: Path) -> list[Path]:
    """Folders of sessions that have a record (set-aside interrupted attempts excluded)."""
    root = run_dir / "sessions"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "session.json").exists() and ".interrupted-" not in p.name)


def _agent_columns(agent: dict) -> dict:
    """What the sessions table says of the agent (its manifest's description): kind, model, CLI version, prompt hash
    and its adapter's settings, so that rows made with different CLI versions or prompts can be told apart."""
    return {"kind": agent.get("kind", ""), "model": agent.get("model", ""), "cli_version": agent.get("cli_version", ""),
            "prompt_sha256": agent.get("prompt_sha256", ""),
            "agent_settings": json.dumps(agent.get("settings", {}) | agent.get("parameters", {}), sort_keys=True)}


def failure_kind(session: dict, verification: dict) -> str:
    """"infra" when the infrastructure failed the session or its verification (never counted against the agent),
    "agent" when the agent failed: its own error, or a final train.py that did not run ok where the baseline did;
    "" when nothing failed."""
    if session.get("status") == "infra_error":
        return "infra"
    if session.get("status") == "agent_error":
        return "agent"
    if verification.get("error"):
        return "infra"
    broken = any(r.get("role") == "final" and r.get("status", "ok") != "ok" and r.get("pair_status") != "baseline_failed"
                 for r in verification.get("runs", []))
    return "agent" if broken else ""


def rebuild_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The tables as the session folders make them, in memory (tables/ untouched)."""
    import pandas as pd   # here, not at the top: the gateway process writes JSON through this module
    rows: dict[str, list[dict]] = {name: [] for name in TABLES}
    for folder in session_dirs(run_dir):
        session = read_json(folder / "session.json")
        manifest = read_json(folder / "manifest.json", {})
        verification = read_json(folder / "verification.json", {})
        rows["sessions"].append(session | _agent_columns(manifest.get("agent", {})) | {
            "host": manifest.get("host", ""), "infra_retries": session.get("infra_retries", 0),
            "failure_kind": failure_kind(session, verification)})
        tag = {"session_id": session["session_id"], "agent": session["agent"]}
        rows["experiments"] += [tag | e for e in read_json(folder / "experiments.json", [])]
        rows["findings"] += [tag | f for f in read_json(folder / "findings.json", []) + verification.get("findings", [])]
        rows["verifications"] += [tag | v for v in verification.get("runs", [])]
    rows["nodes"] = node_rows(run_dir)
    return {name: pd.DataFrame([r | {"schema_version": SCHEMA_VERSION} for r in table_rows])
            for name, table_rows in rows.items()}


def node_rows(run_dir: Path) -> list[dict]:
    """One row per calibration run of each node (nodes/<host>.json, harness/calibration.py)."""
    rows = []
    for path in sorted((run_dir / "nodes").glob("*.json")):
        node = read_json(path)
        rows += [{"node": node["node"], "profile_hash": node["profile_hash"], "seed": run["seed"],
                  "status": run["status"], "steps": run["steps"], "tokens_per_second": run["tokens_per_second"],
                  "val_bpb": (run["trusted"] or {}).get("val") if run["status"] == "ok" else None,
                  "training_seconds": run["training_seconds"], "message": run["message"]} for run in node["runs"]]
        rows += [{"node": node["node"], "profile_hash": node["profile_hash"], "seed": failure["seed"],
                  "status": "infra_error", "steps": None, "tokens_per_second": None, "val_bpb": None,
                  "training_seconds": None, "message": failure["message"]} for failure in node["infra_failures"]]
    return rows


def build_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Rebuild the parquet tables from the session folders; returns them."""
    tables = rebuild_tables(run_dir)
    out = run_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        tmp = out / f".{name}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out / f"{name}.parquet")
    return tables
