"""Helpers shared by tests of every area (a module of its own: each test folder has a conftest.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bench.profile import Profile, load_profile


def fast_profile() -> Profile:
    """cpu-tiny scaled down so one training run takes seconds: 1 s budget, 64-token context, small eval."""
    tiny = load_profile("cpu-tiny")
    return dataclasses.replace(tiny, name="cpu-tiny-test",
                               task={**tiny.task, "max_seq_len": 64, "time_budget": 1, "eval_tokens": 4096},
                               train={"DEPTH": 1, "DEVICE_BATCH_SIZE": 4, "TOTAL_BATCH_SIZE": 256})


def write_config(tmp_path: Path, agents: list[str], experiments: int = 2, seeds=(1000, 1001),
                 runtime: str = "process", calibration_runs: int = 0) -> Path:
    """A run config on fast_profile(): one session per agent, verified on `seeds`; no per-node calibration unless
    asked (it trains calibration_runs baselines before the first session)."""
    profile = tmp_path / "fast-profile.toml"
    profile.write_text(fast_profile().to_toml())
    config = tmp_path / "run.toml"
    config.write_text(f'run_id = "e2e"\nprofile = "{profile}"\nagents = {json.dumps(agents)}\nrepeats = 1\n'
                      f'runtime = "{runtime}"\n[budget]\nseconds = 300\nexperiments = {experiments}\n'
                      f'[seeds]\nverify = {list(seeds)}\n[calibration]\nruns = {calibration_runs}\n')
    return config


def write_session_folders(run_dir: Path, tables) -> None:
    """Tables (harness/analyze.py Tables) as session folders, the way the session, collect and verify stages leave
    them, so that harness/store.py's build_tables rebuilds them (every table needs a session_id column)."""
    from harness.store import write_json
    for record in tables.sessions.to_dict("records"):
        sid = record["session_id"]
        folder = run_dir / "sessions" / sid
        rows = {name: frame[frame["session_id"] == sid].drop(columns=["session_id", "agent"]).to_dict("records")
                for name, frame in (("experiments", tables.experiments), ("findings", tables.findings),
                                    ("verifications", tables.verifications))}
        write_json(folder / "session.json", record)
        write_json(folder / "experiments.json", rows["experiments"])
        write_json(folder / "findings.json", rows["findings"])
        write_json(folder / "verification.json", {"runs": rows["verifications"]})
