"""Helpers for the tests of bench/train.py, bench/launch.py and bench/trusted_eval.py: small workspaces,
runs through the real launcher, and the model definitions of train.py without its training script."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types
from pathlib import Path

from bench.contracts import RunOutcome
from bench.profile import Profile, load_profile, render_train_py
from harness.benchmark import step_limited, write_workspace
from harness.data import DataPaths
from harness.runtime.process import SITECUSTOMIZE_DIR



def small_profile() -> Profile:
    """cpu-tiny shrunk so that one run takes seconds: 64-token context, one layer, 4096 eval tokens, 1 s budget."""
    tiny = load_profile("cpu-tiny")
    return dataclasses.replace(tiny, name="cpu-tiny-small",
                               task={**tiny.task, "max_seq_len": 64, "time_budget": 1, "eval_tokens": 4096},
                               train={"DEPTH": 1, "DEVICE_BATCH_SIZE": 8, "TOTAL_BATCH_SIZE": 512})


def workspace(root: Path, profile: Profile | None = None, steps: int | None = None, edit=None) -> Path:
    """A workspace with the profile's train.py: step-limited if steps is given, then passed through edit(text)."""
    profile = profile or small_profile()
    text = render_train_py(profile)
    if steps is not None:
        text = step_limited(text, steps)
    if edit is not None:
        text = edit(text)
    return write_workspace(root, profile, text)


def run_env(data: DataPaths, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBENCH_")}
    return env | {"ARBENCH_DATA_DIR": str(data.data_dir), "ARBENCH_TEST_DIR": str(data.test_dir)} | extra


def launch(ws: Path, data: DataPaths, seed: int, *options: str, script: str = "train.py") -> RunOutcome:
    """`python -m bench.launch` in ws; the RunOutcome it wrote."""
    argv = [sys.executable, "-m", "bench.launch", "--seed", str(seed), "--result", "outcome.json",
            "--log", "run.log", *options, script]
    subprocess.run(argv, cwd=ws, env=run_env(data), check=True, capture_output=True, timeout=300)
    return RunOutcome.from_json((ws / "outcome.json").read_text())


def train_definitions(profile: Profile) -> types.ModuleType:
    """The classes and functions of train.py (everything above its setup section) as a module."""
    import bench.prepare
    text = render_train_py(profile)
    module = types.ModuleType("train_definitions")
    sys.modules[module.__name__] = module   # dataclasses look their module up
    saved = sys.modules.get("prepare")
    sys.modules["prepare"] = bench.prepare
    try:
        exec(compile(text[:text.index("# Setup: tokenizer, model, optimizer, dataloader")], "train.py", "exec"),
             module.__dict__)
    finally:
        sys.modules.pop("prepare") if saved is None else sys.modules.__setitem__("prepare", saved)
    return module
