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
                 runtime: str = "process") -> Path:
    """A run config on fast_profile(): one session per agent, verified on `seeds`."""
    profile = tmp_path / "fast-profile.toml"
    profile.write_text(fast_profile().to_toml())
    config = tmp_path / "run.toml"
    config.write_text(f'run_id = "e2e"\nprofile = "{profile}"\nagents = {json.dumps(agents)}\nrepeats = 1\n'
                      f'runtime = "{runtime}"\n[budget]\nseconds = 300\nexperiments = {experiments}\n'
                      f'[seeds]\nverify = {list(seeds)}\n')
    return config
