"""bench/trusted_eval.py through the real launcher: the parent's score equals prepare.evaluate_bpb on the
same model, does not depend on the batch size, ignores an edited prepare.py and anything train.py writes
or fakes; random-cut causality checks catch a model that looks ahead, anywhere in the row; `untrained`
is there for every trusted run; the measurements in `checks` are filled in."""

from __future__ import annotations

import math

import pytest
import torch
from launching import launch, small_profile, train_definitions, workspace

from bench import trusted_eval
from bench.launch import Hello
from bench.sources.cli import load_prepare_module

SEED = 3
EVAL_CALL = "val_bpb = evaluate_bpb(model, tokenizer, DEVICE_BATCH_SIZE)"


def _before_eval(code: str):
    """An edit that runs `code` (one indented line per line) just before train.py calls evaluate_bpb."""
    def edit(text: str) -> str:
        assert text.count(EVAL_CALL) == 1
        lines = "".join(f"    {line}\n" for line in code.strip().splitlines())
        return text.replace(f"    {EVAL_CALL}\n", lines + f"    {EVAL_CALL}\n")
    return edit


def _replace(old: str, new: str):
    def edit(text: str) -> str:
        assert text.count(old) == 1, old
        return text.replace(old, new)
    return edit


SAVE_MODEL = "torch.save({'state': model.state_dict(), 'config': asdict(config)}, 'model.pt')"
NON_CAUSAL = _replace("return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)",
                      "return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)")
# the last 16 of 64 query positions see the whole row: two fixed cuts in the middle of the row would miss it
PEEKS_LATE = _replace("    return mask_mod(None, None, pos[:, None], pos[None, :])\n",
                      "    m = mask_mod(None, None, pos[:, None], pos[None, :])\n    m[-16:, :] = True\n    return m\n")
FORGE_FDS = """
import json as _json, os as _os, stat as _stat
for _fd in map(int, _os.listdir('/proc/self/fd')):
    try:
        if {sockets} or not _stat.S_ISSOCK(_os.fstat(_fd).st_mode):
            _os.write(_fd, (_json.dumps({{'bpb': {{'val': 0.1, 'test': 0.1}}, 'done': True}}) + '\\n').encode())
    except OSError:
        pass
"""
# looks its inputs up in its own copy of the val rows and predicts the true next token: it never gets y
LOOKUP = """
import prepare as _p
_rows = torch.cat([next(_p.make_dataloader(tokenizer, 64, MAX_SEQ_LEN, 'val', device=device))[i] for i in (0, 1)], 1)
_known = {tuple(r[:MAX_SEQ_LEN].tolist()): r[MAX_SEQ_LEN:] for r in _rows}
_forward = model.forward
def _cheat(idx, targets=None, reduction='mean'):
    out = _forward(idx)
    for i, row in enumerate(idx):
        if tuple(row.tolist()) in _known:
            out[i] = 100.0 * torch.nn.functional.one_hot(_known[tuple(row.tolist())], out.size(-1)).float()
    return out
model.forward = _cheat
"""
NO_LOGITS = "model.forward = lambda idx, targets=None, reduction='mean': model.lm_head.weight.sum()"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus_data):
    """Step-limited (4 steps, so deterministic) trusted runs of train.py variants, seed 3 unless named."""
    root = tmp_path_factory.mktemp("trusted")
    edited_prepare = workspace(root / "edited", steps=4)
    prepare_py = edited_prepare / "prepare.py"
    prepare_py.write_text(prepare_py.read_text() + "\ndef evaluate_bpb(*args, **kwargs):\n    return 0.0\n")
    variants = {
        "honest": _before_eval(SAVE_MODEL),
        "batch 5": _replace(EVAL_CALL, EVAL_CALL.replace("DEVICE_BATCH_SIZE", "5")),
        "batch 1000": _replace(EVAL_CALL, EVAL_CALL.replace("DEVICE_BATCH_SIZE", "1000")),
        "non-causal": NON_CAUSAL,
        "peeks late": PEEKS_LATE,
        "forges on files and pipes": _before_eval(FORGE_FDS.format(sockets=False)),
        "forges on every fd": _before_eval(FORGE_FDS.format(sockets=True)),
        "looks up the rows": _before_eval(LOOKUP),
        "no logits": _before_eval(NO_LOGITS),
    }
    outcomes = {name: launch(workspace(root / name.replace(" ", "-"), steps=4, edit=edit), corpus_data, SEED,
                             "--trusted", "val,test")
                for name, edit in variants.items()}
    outcomes["edited prepare"] = launch(edited_prepare, corpus_data, SEED, "--trusted", "val,test")
    outcomes["edited prepare, untrusted"] = launch(edited_prepare, corpus_data, SEED)
    outcomes["root"] = root
    return outcomes


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


@pytest.mark.slow
def test_out_of_process_score_equals_prepare_evaluate_bpb_on_the_same_model(runs, prep):
    outcome = runs["honest"]
    assert outcome.status == "ok", outcome.message
    saved = torch.load(runs["root"] / "honest" / "model.pt")
    gpt = train_definitions(small_profile())
    model = gpt.GPT(gpt.GPTConfig(**saved["config"]))
    model.init_weights()
    model.load_state_dict(saved["state"])
    model.eval()
    reference = prep.evaluate_bpb(model, prep.Tokenizer.from_directory(), 8)
    assert math.isclose(outcome.trusted["val"], reference, rel_tol=1e-6)
    assert 1.0 < reference < outcome.untrained["val"]


@pytest.mark.slow
def test_trusted_rows_do_not_depend_on_the_batch_size(runs):
    honest = runs["honest"].trusted
    for name in ("batch 5", "batch 1000"):
        assert runs[name].status == "ok", runs[name].message
        for split in ("val", "test"):
            assert math.isclose(runs[name].trusted[split], honest[split], rel_tol=1e-6)


@pytest.mark.slow
def test_honest_run_is_scored_on_both_splits_with_every_measurement(runs):
    outcome = runs["honest"]
    assert set(outcome.trusted) == {"val", "test"} and outcome.trusted["val"] != outcome.trusted["test"]
    assert all(1.0 < outcome.trusted[s] < outcome.untrained[s] for s in ("val", "test"))
    checks = outcome.checks
    assert checks["causal"] is True and checks["causal_max_diff"] <= trusted_eval.CAUSAL_ATOL
    assert checks["causal_cuts"] == 2 * 8 * 8   # few batches: every batch of both splits, one cut per row
    assert 0 < checks["pre_eval_seconds"] < outcome.wall_seconds and 0 < checks["eval_seconds"] < outcome.wall_seconds
    assert 0 < checks["training_seconds"] < checks["pre_eval_seconds"]   # from the first train batch, not the start
    assert checks["train_tokens"] == 5 * 512 and checks["train_steps"] == 4   # a batch prefetched, one per step
    assert checks["tokens_per_second"] > 0 and checks["cpu_seconds"] > 0
    assert checks["neighbour_load"] is not None and checks["neighbour_load"] >= 0
    assert len(checks["init_fingerprint"]) == 32


@pytest.mark.slow
def test_an_edited_workspace_prepare_py_has_no_effect_on_the_trusted_score(runs):
    assert runs["edited prepare, untrusted"].summary["val_bpb"] == 0.0   # the edit works when not trusted
    assert runs["edited prepare"].trusted == pytest.approx(runs["honest"].trusted, rel=1e-9)


@pytest.mark.slow
def test_a_train_py_with_non_causal_attention_is_noncausal(runs):
    outcome = runs["non-causal"]
    assert outcome.status == "noncausal" and "moved by" in outcome.message
    assert outcome.checks["causal"] is False and outcome.checks["causal_max_diff"] > trusted_eval.CAUSAL_ATOL
    assert set(outcome.trusted) == {"val", "test"}   # the numbers are kept, the run is not scored


@pytest.mark.slow
def test_a_model_that_looks_ahead_only_late_in_the_row_is_caught_by_random_cuts(runs):
    outcome = runs["peeks late"]
    assert outcome.status == "noncausal", outcome.message
    cut = int(outcome.message.rsplit("cut ", 1)[1].rstrip(")"))
    assert cut >= 64 - 16   # only cuts in the leaking range can see it


@pytest.mark.slow
def test_results_written_to_files_and_pipes_change_nothing(runs):
    outcome = runs["forges on files and pipes"]
    assert outcome.status == "ok", outcome.message
    assert outcome.trusted == pytest.approx(runs["honest"].trusted, rel=1e-9)


@pytest.mark.slow
def test_bytes_written_to_the_control_socket_fail_the_run(runs):
    outcome = runs["forges on every fd"]
    assert outcome.status == "crash" and "malformed" in outcome.message
    assert outcome.trusted is None and set(outcome.untrained) == {"val", "test"}


@pytest.mark.slow
def test_logits_made_from_rows_it_looked_up_are_noncausal(runs):
    outcome = runs["looks up the rows"]
    assert outcome.status == "noncausal", outcome.message
    assert outcome.trusted["val"] < 0.5   # what it would have claimed


@pytest.mark.slow
def test_a_model_that_returns_no_logits_is_a_crash(runs):
    outcome = runs["no logits"]
    assert outcome.status == "crash" and "logits" in outcome.message and outcome.trusted is None


def test_a_model_on_a_cuda_device_is_served_through_cuda_ipc():
    assert trusted_eval.transport_for(torch.device("cuda", 1)) == "cuda_ipc"
    assert trusted_eval.transport_for(torch.device("cpu")) == "shared_file"
    assert trusted_eval.transport_for(torch.device("mps")) == "shared_file"


def test_shared_file_buffers_are_the_same_memory_in_both_views(tmp_path):
    buffer, handle = trusted_eval.allocate((2, 3), torch.float32, torch.device("cpu"), tmp_path)
    view = trusted_eval.open_buffer(handle)
    view.copy_(torch.arange(6.0).view(2, 3))
    assert torch.equal(buffer, torch.arange(6.0).view(2, 3))


GOOD_HELLO = {"device": "cpu", "batch_size": 8, "train_tokens": 2560, "train_steps": 4, "tokens_per_second": 5000.0,
              "init_fingerprint": "ab12", "first_batch_at": 1234.5}


@pytest.mark.parametrize("change", [
    {"device": "cpu; rm -rf /"}, {"batch_size": True}, {"batch_size": "8"}, {"train_tokens": -1},
    {"tokens_per_second": float("inf")}, {"init_fingerprint": "not hex"}, {"train_steps": 1.5}, {"bpb": 0.1},
])
def test_a_malformed_hello_is_rejected(change):
    assert Hello.parse(GOOD_HELLO) == Hello(**GOOD_HELLO)
    with pytest.raises(ValueError):
        Hello.parse(GOOD_HELLO | change)
