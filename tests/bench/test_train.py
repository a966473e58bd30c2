"""bench/train.py: the original's hyperparameters under the h100 profile, sliding windows that really
limit attention, logits without targets, and a cpu-tiny run that keeps to its budget and learns."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from launching import launch, small_profile, train_definitions, workspace

from bench.profile import load_profile, render_train_py

# karpathy/autoresearch train.py, hyperparameter block
ORIGINAL_HYPERPARAMETERS = {
    "ASPECT_RATIO": 64, "HEAD_DIM": 128, "WINDOW_PATTERN": "SSSL", "TOTAL_BATCH_SIZE": 2**19,
    "EMBEDDING_LR": 0.6, "UNEMBEDDING_LR": 0.004, "MATRIX_LR": 0.04, "SCALAR_LR": 0.5, "WEIGHT_DECAY": 0.2,
    "ADAM_BETAS": (0.8, 0.95), "WARMUP_RATIO": 0.0, "WARMDOWN_RATIO": 0.5, "FINAL_LR_FRAC": 0.0,
    "DEPTH": 8, "DEVICE_BATCH_SIZE": 128,
}


def hyperparameters(train_py: str) -> dict:
    namespace: dict = {}
    for line in re.findall(r"^[A-Z][A-Z0-9_]* = [^#\n]*#.*$", train_py, re.MULTILINE):
        exec(line, namespace)
    return {k: v for k, v in namespace.items() if k.isupper()}


def test_h100_profile_gives_the_original_hyperparameters():
    values = hyperparameters(render_train_py(load_profile("h100")))
    assert {k: values[k] for k in ORIGINAL_HYPERPARAMETERS} == ORIGINAL_HYPERPARAMETERS
    assert values["COMPILE"] is True


def test_cpu_tiny_profile_renders_its_values():
    profile = load_profile("cpu-tiny")
    values = hyperparameters(render_train_py(profile))
    assert {k: values[k] for k in profile.train} == {k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in profile.train.items()}


@pytest.fixture(scope="module")
def gpt():
    return train_definitions(small_profile())


def _attention_output_change(gpt, window: int, position: int) -> list[bool]:
    """Which outputs of one attention layer change when the input at `position` changes."""
    torch.manual_seed(0)
    config = gpt.GPTConfig(sequence_len=16, vocab_size=32, n_layer=1, n_head=2, n_kv_head=2, n_embd=64)
    model = gpt.GPT(config)
    model.init_weights()
    attn = model.transformer.h[0].attn
    torch.nn.init.normal_(attn.c_proj.weight)   # zero at init, which would hide everything
    cos_sin = model.cos[:, :16], model.sin[:, :16]
    mask = gpt.build_attention_mask(16, window, torch.device("cpu"))
    x = torch.randn(1, 16, 64)
    moved = x.clone()
    moved[:, position] += 1.0
    with torch.no_grad():
        diff = (attn(x, None, cos_sin, mask) - attn(moved, None, cos_sin, mask)).abs().amax(dim=(0, 2))
    return (diff > 1e-6).tolist()


def test_sliding_window_limits_what_attention_sees(gpt):
    assert _attention_output_change(gpt, window=4, position=0) == [t <= 4 for t in range(16)]
    assert _attention_output_change(gpt, window=16, position=0) == [True] * 16


def test_attention_is_causal(gpt):
    assert _attention_output_change(gpt, window=16, position=9) == [t >= 9 for t in range(16)]


def test_layers_follow_the_window_pattern_and_the_last_is_long(gpt):
    config = gpt.GPTConfig(sequence_len=64, vocab_size=32, n_layer=6, n_head=1, n_kv_head=1, n_embd=32,
                           window_pattern="SSSL")
    assert gpt.GPT(config).window_sizes == [32, 32, 32, 64, 32, 64]


def test_model_returns_logits_without_targets_and_the_loss_with_them(gpt):
    torch.manual_seed(0)
    config = gpt.GPTConfig(sequence_len=16, vocab_size=32, n_layer=2, n_head=1, n_kv_head=1, n_embd=64)
    model = gpt.GPT(config)
    model.init_weights()
    idx, targets = torch.randint(0, 32, (3, 16)), torch.randint(0, 32, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, 32)
    expected = F.cross_entropy(logits.view(-1, 32), targets.view(-1))
    assert torch.allclose(model(idx, targets), expected)


@pytest.mark.slow
def test_cpu_tiny_run_keeps_to_its_budget_and_beats_the_untrained_model(tmp_path, corpus_data):
    profile = load_profile("cpu-tiny")
    trained = launch(workspace(tmp_path / "trained", profile), corpus_data, seed=0)
    untrained = launch(workspace(tmp_path / "untrained", profile, steps=0), corpus_data, seed=0)
    assert trained.status == "ok", trained.message
    assert untrained.status == "ok", untrained.message
    budget = profile.time_budget
    assert budget <= trained.summary["training_seconds"] < 1.5 * budget
    assert trained.summary["num_steps"] > 11
    print(f"cpu-tiny: {trained.wall_seconds:.1f}s wall, val_bpb {trained.summary['val_bpb']:.4f} "
          f"(untrained {untrained.summary['val_bpb']:.4f})")
    assert trained.summary["val_bpb"] < untrained.summary["val_bpb"] - 0.5
