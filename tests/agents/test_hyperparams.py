"""train.py's hyperparameter block and the search space of the random and greedy controls."""

from __future__ import annotations

import random

import pytest

from agents.controls.hyperparams import perturb, read_hyperparameters, sample, search_space, write_hyperparameters
from bench.profile import load_profile, render_train_py


@pytest.mark.parametrize("profile_name", ["cpu-tiny", "h100"])
def test_reads_the_rendered_block(profile_name):
    profile = load_profile(profile_name)
    values = read_hyperparameters(render_train_py(profile))
    assert {k: values[k] for k in profile.train} == profile.train
    assert values["ADAM_BETAS"] == (0.8, 0.95) and values["WINDOW_PATTERN"] == "SSSL"


def test_arithmetic_literals_and_junk():
    text = "A = 2**19  # tokens\nB = foo(1)  # a call is not a literal\nC = -0.5\nlower = 1\n"
    assert read_hyperparameters(text) == {"A": 524288, "C": -0.5}


def test_write_keeps_comments_and_other_lines():
    train_py = render_train_py(load_profile("cpu-tiny"))
    new = write_hyperparameters(train_py, {"MATRIX_LR": 0.031, "DEPTH": 3})
    assert "MATRIX_LR = 0.031        # learning rate for matrix parameters (Muon)" in new
    assert read_hyperparameters(new) == read_hyperparameters(train_py) | {"MATRIX_LR": 0.031, "DEPTH": 3}
    assert len(new.splitlines()) == len(train_py.splitlines())


@pytest.mark.parametrize("profile_name", ["cpu-tiny", "h100"])
def test_samples_and_steps_stay_in_range_and_respect_the_batch_constraint(profile_name):
    profile = load_profile(profile_name)
    baseline = read_hyperparameters(render_train_py(profile))
    space = search_space(baseline, profile.task["max_seq_len"])
    assert {p.name for p in space} >= {"MATRIX_LR", "EMBEDDING_LR", "WARMDOWN_RATIO", "WEIGHT_DECAY", "DEPTH",
                                       "TOTAL_BATCH_SIZE"}
    tokens_per_pass = baseline["DEVICE_BATCH_SIZE"] * profile.task["max_seq_len"]
    rng = random.Random(0)
    for param in space:
        for _ in range(200):
            for value in (sample(param, rng), perturb(param, baseline[param.name], rng)):
                if param.kind == "choice":
                    assert value in param.choices
                else:
                    assert param.low <= value <= param.high
                if param.name == "TOTAL_BATCH_SIZE":
                    assert value % tokens_per_pass == 0 and value >= tokens_per_pass
                if param.name == "DEPTH":
                    assert isinstance(value, int) and value >= 1


def test_greedy_steps_move():
    profile = load_profile("cpu-tiny")
    baseline = read_hyperparameters(render_train_py(profile))
    rng = random.Random(1)
    for param in search_space(baseline, profile.task["max_seq_len"]):
        assert any(perturb(param, baseline[param.name], rng) != baseline[param.name] for _ in range(20)), param
