"""The results store. A run directory looks like this:

    <run_dir>/
      run.json                          the run's config as it was run, git revision of the project
      gateway/gateway.log               the run's LLM gateway, when an agent uses it (harness/gateway)
      sessions/<agent>-r<repeat>/       one folder per session: the source of truth
        session.json                    SessionRecord, rewritten atomically after each stage: status, end_reason,
                                        the budgets, the LLM gateway's usage totals
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
                                        attempts and measurements, findings from the runs (harness/verify.py)
      sessions/<id>.interrupted-<n>/    a session killed mid-way, set aside (never deleted) when redone
      cache/<profile_hash>/pairs/<baseline_hash>-<final_hash>/seed-<seed>/
        pair.json                       trusted results of one pair, shared by sessions with the same two train.py
        attempt-<n>/baseline|final/     each run's train.py, launcher result, logs
      tables/*.parquet                  sessions, experiments, verifications, findings: built from the folders
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
TABLES = ("sessions", "experiments", "verifications", "findings")


def write_json(path: Path, data: Any) -> None:
    """Atomically write data (a dataclass, a list of them, or plain JSON) to path."""
    payload = _plain(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def build_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Rebuild the parquet tables from the session folders; returns them."""
    import pandas as pd   # here, not at the top: the gateway process writes JSON through this module
    rows: dict[str, list[dict]] = {name: [] for name in TABLES}
    for folder in session_dirs(run_dir):
        session = read_json(folder / "session.json")
        rows["sessions"].append(session | _agent_columns(read_json(folder / "manifest.json", {}).get("agent", {})))
        tag = {"session_id": session["session_id"], "agent": session["agent"]}
        rows["experiments"] += [tag | e for e in read_json(folder / "experiments.json", [])]
        verification = read_json(folder / "verification.json", {})
        rows["findings"] += [tag | f for f in read_json(folder / "findings.json", []) + verification.get("findings", [])]
        rows["verifications"] += [tag | v for v in verification.get("runs", [])]
    tables = {}
    out = run_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    for name, table_rows in rows.items():
        df = pd.DataFrame([r | {"schema_version": SCHEMA_VERSION} for r in table_rows])
        tmp = out / f".{name}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out / f"{name}.parquet")
        tables[name] = df
    return tables
