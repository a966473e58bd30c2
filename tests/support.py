"""Helpers shared by tests of every area (a module of its own: each test folder has a conftest.py)."""

from __future__ import annotations

import dataclasses

from bench.profile import Profile, load_profile


def fast_profile() -> Profile:
    """cpu-tiny scaled down so one training run takes seconds: 1 s budget, 64-token context, small eval."""
    tiny = load_profile("cpu-tiny")
    return dataclasses.replace(tiny, name="cpu-tiny-test",
                               task={**tiny.task, "max_seq_len": 64, "time_budget": 1, "eval_tokens": 4096},
                               train={"DEPTH": 1, "DEVICE_BATCH_SIZE": 4, "TOTAL_BATCH_SIZE": 256})
