"""bench/trusted_eval.py: the trusted bpb is prepare.evaluate_bpb's metric on fixed rows whatever the batch
size, a model that sees future tokens fails the causality check, and the launcher's trusted mode scores
val and test with the harness's own prepare (an edited workspace prepare.py changes nothing)."""

from __future__ import annotations

import math

import pytest
import torch
from launching import launch, small_profile, train_definitions, workspace

from bench import trusted_eval
from bench.sources.cli import load_prepare_module


@pytest.fixture
def prep(tmp_path, monkeypatch, corpus_data):
    """A fresh bench.prepare for the small profile (64-token rows, 4096 eval tokens) on the corpus data."""
    profile = tmp_path / "profile.toml"
    profile.write_text(small_profile().to_toml())
    for key in ("ARBENCH_PROFILE", "ARBENCH_SOURCE"):
        monkeypatch.setenv(key, "")   # load_prepare_module sets them; monkeypatch restores them afterwards
    monkeypatch.setenv("ARBENCH_DATA_DIR", str(corpus_data.data_dir))
    monkeypatch.setenv("ARBENCH_TEST_DIR", str(corpus_data.test_dir))
    return load_prepare_module(str(profile), "corpus")


@pytest.fixture(scope="module")
def gpt_model():
    """train.py's GPT, untrained but with a random (not near-uniform) output layer."""
    gpt = train_definitions(small_profile())
    torch.manual_seed(0)
    model = gpt.GPT(gpt.GPTConfig(sequence_len=64, vocab_size=1024, n_layer=2, n_head=1, n_kv_head=1, n_embd=64))
    model.init_weights()
    torch.nn.init.normal_(model.lm_head.weight, std=0.3)
    return model


class FuturePeeker(torch.nn.Module):
    """Predicts each next token by looking at it: a perfect, non-causal model."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, idx):
        following = torch.roll(idx, shifts=-1, dims=1)
        return self.scale * torch.nn.functional.one_hot(following, self.vocab).float()


class ReturnsLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, idx, targets=None):
        return self.w + 1.0


def test_trusted_bpb_equals_prepare_evaluate_bpb(prep, gpt_model):
    tokenizer = prep.Tokenizer.from_directory()
    reference = prep.evaluate_bpb(gpt_model, tokenizer, 8)
    trusted = trusted_eval.evaluate(gpt_model, prep, ["val"], batch_size=8)
    assert trusted["rows"] == 64 and trusted["causal"]
    assert math.isclose(trusted["bpb"]["val"], reference, rel_tol=1e-5)
    assert 1.0 < reference < 20.0


def test_trusted_rows_do_not_depend_on_the_batch_size(prep, gpt_model):
    by_batch = [trusted_eval.evaluate(gpt_model, prep, ["val"], batch_size=b)["bpb"]["val"] for b in (8, 5, None)]
    assert max(by_batch) - min(by_batch) < 1e-6


def test_test_split_is_scored_from_the_held_out_shard(prep, gpt_model):
    bpb = trusted_eval.evaluate(gpt_model, prep, ["val", "test"], batch_size=16)["bpb"]
    assert set(bpb) == {"val", "test"} and bpb["val"] != bpb["test"]


def test_a_model_that_sees_future_tokens_fails_the_causality_check(prep, gpt_model):
    leaky = trusted_eval.evaluate(FuturePeeker(1024), prep, ["val"], batch_size=16)
    assert not leaky["causal"] and leaky["causal_max_diff"] > 1.0
    assert leaky["bpb"]["val"] < 0.5   # what it would have claimed (the last position of a row is wrong)
    honest = trusted_eval.evaluate(gpt_model, prep, ["val"], batch_size=16)
    assert honest["causal"] and honest["causal_max_diff"] <= trusted_eval.CAUSAL_ATOL


def test_a_model_that_returns_no_logits_is_rejected(prep):
    with pytest.raises(trusted_eval.TrustedEvalError, match="logits"):
        trusted_eval.evaluate(ReturnsLoss(), prep, ["val"], batch_size=16)


def _non_causal(text: str) -> str:
    old = "return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)"
    assert old in text
    return text.replace(old, "return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)")


@pytest.fixture(scope="module")
def trusted_runs(tmp_path_factory, corpus_data):
    root = tmp_path_factory.mktemp("trusted")
    honest = workspace(root / "honest", steps=4)
    edited_prepare = workspace(root / "edited", steps=4)
    prepare_py = edited_prepare / "prepare.py"
    prepare_py.write_text(prepare_py.read_text() + "\ndef evaluate_bpb(*args, **kwargs):\n    return 0.0\n")
    return {
        "honest": launch(honest, corpus_data, 3, "--trusted", "val,test"),
        "edited prepare": launch(edited_prepare, corpus_data, 3, "--trusted", "val,test"),
        "edited prepare, untrusted": launch(edited_prepare, corpus_data, 3),
        "non-causal": launch(workspace(root / "leaky", steps=4, edit=_non_causal), corpus_data, 3, "--trusted", "val"),
    }


@pytest.mark.slow
def test_trusted_launch_scores_val_and_test_and_times_the_run_from_outside(trusted_runs):
    outcome = trusted_runs["honest"]
    assert outcome.status == "ok", outcome.message
    assert set(outcome.trusted) == {"val", "test"} and all(1.0 < v < 10.0 for v in outcome.trusted.values())
    assert outcome.checks["causal"] is True
    assert 0 < outcome.checks["pre_eval_seconds"] < outcome.wall_seconds


@pytest.mark.slow
def test_an_edited_workspace_prepare_py_has_no_effect_on_the_trusted_score(trusted_runs):
    assert trusted_runs["edited prepare, untrusted"].summary["val_bpb"] == 0.0   # the edit works when trusted
    assert trusted_runs["edited prepare"].trusted == trusted_runs["honest"].trusted


@pytest.mark.slow
def test_trusted_launch_flags_a_non_causal_train_py(trusted_runs):
    outcome = trusted_runs["non-causal"]
    assert outcome.checks["causal"] is False
