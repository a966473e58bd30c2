"""bench/launch.py and bench/sitecustomize: seeds (determinism, remapping of seeds train.py sets, the initial
weights' fingerprint), the trusted mode's limits measured from outside (train limit, eval
limit), and a RunOutcome for every kind of bad run (crash, NaN, timeout, over budget), never a hang."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launching import SITECUSTOMIZE_DIR, launch, run_env, workspace

from bench.contracts import RunOutcome
from bench.launch import classify, parse_summary

SUMMARY = """step 00010 (50.0%) | loss: 4.1\r
---
val_bpb:          1.234567
training_seconds: 20.1
peak_vram_mb:     812.5
num_steps:        61
"""


def test_parse_summary_reads_the_block_after_the_last_separator():
    assert parse_summary("---\nval_bpb: 9.0\n" + SUMMARY) == {"val_bpb": 1.234567, "training_seconds": 20.1,
                                                               "peak_vram_mb": 812.5, "num_steps": 61.0}
    assert parse_summary("no summary") == {}


def test_classify_each_kind_of_run():
    assert classify(0, False, SUMMARY) == ("ok", "")
    assert classify(1, False, "step 00003 | loss: 4.2\nFAIL\n")[0] == "nan"
    assert classify(0, False, SUMMARY.replace("1.234567", "nan"))[0] == "nan"
    assert classify(1, False, "Traceback (most recent call last):\n  x\nValueError: bad shape\n") == \
        ("crash", "ValueError: bad shape")
    assert classify(0, False, "started\n") == ("crash", "finished without a val_bpb in its summary")
    assert classify(-9, False, "") == ("crash", "killed by signal 9")
    assert classify(None, True, SUMMARY)[0] == "timeout"


SEED_PROBE = """
import json, random, sys
import numpy as np, torch
if sys.argv[1] != "plain":
    from bench.launch import install_seed_hooks
    install_seed_hooks(int(sys.argv[1]))
unseeded = torch.rand(1).item()
torch.manual_seed(137); t = torch.rand(1).item()
torch.cuda.manual_seed(137); torch.cuda.manual_seed_all(137)
random.seed(137); r = random.random()
np.random.seed(137); n = np.random.rand()
g = np.random.default_rng(137).random()
gen = torch.rand(1, generator=torch.Generator().manual_seed(137)).item()
assert isinstance(torch.default_generator, torch.Generator) and isinstance(torch.Generator(), torch._C.Generator)
print(json.dumps({"unseeded": unseeded, "torch": t, "random": r, "numpy": n, "default_rng": g, "generator": gen}))
"""


def test_seed_hooks_remap_every_seed_train_py_sets():
    runs = {"1": "1", "1 again": "1", "2": "2", "plain": "plain"}
    procs = {label: subprocess.Popen([sys.executable, "-c", SEED_PROBE, arg], stdout=subprocess.PIPE, text=True)
             for label, arg in runs.items()}
    values = {label: json.loads(p.communicate(timeout=120)[0]) for label, p in procs.items()}
    assert values["1"] == values["1 again"]
    for key in values["1"]:
        assert values["1"][key] != values["2"][key], key
        if key != "unseeded":
            assert values["1"][key] != values["plain"][key], key


def _plain_run(ws: Path, data, **env: str) -> str:
    """`python train.py > run.log` in ws, as an agent runs it; the log."""
    with open(ws / "plain.log", "w") as log:
        subprocess.run([sys.executable, "train.py"], cwd=ws, env=run_env(data, **env), stdout=log,
                       stderr=subprocess.STDOUT, check=True, timeout=300)
    return (ws / "plain.log").read_text()


@pytest.fixture(scope="module")
def seeded_runs(tmp_path_factory, corpus_data):
    """A step-limited train.py that hard-codes torch.manual_seed(137), run: under the launcher with seed 1
    (twice) and seed 2, plainly without hooks, and as `python train.py` under sitecustomize with seed 1."""
    root = tmp_path_factory.mktemp("seeded")
    ws = workspace(root / "ws", steps=6, edit=lambda text: text.replace("torch.manual_seed(42)", "torch.manual_seed(137)"))
    return {
        "seed 1": launch(ws, corpus_data, 1), "seed 1 again": launch(ws, corpus_data, 1),
        "seed 2": launch(ws, corpus_data, 2),
        "plain": parse_summary(_plain_run(ws, corpus_data)),
        "sitecustomize": parse_summary(_plain_run(ws, corpus_data, ARBENCH_SEED="1",
                                                  PYTHONPATH=str(SITECUSTOMIZE_DIR))),
    }


@pytest.mark.slow
def test_same_seed_gives_the_identical_val_bpb(seeded_runs):
    first, again = seeded_runs["seed 1"], seeded_runs["seed 1 again"]
    assert first.status == again.status == "ok", first.message
    assert first.summary["val_bpb"] == again.summary["val_bpb"]


@pytest.mark.slow
def test_different_seeds_give_different_val_bpb(seeded_runs):
    assert seeded_runs["seed 1"].summary["val_bpb"] != seeded_runs["seed 2"].summary["val_bpb"]


@pytest.mark.slow
def test_a_hard_coded_seed_does_not_choose_the_outcome(seeded_runs):
    assert seeded_runs["seed 1"].summary["val_bpb"] != seeded_runs["plain"]["val_bpb"]


@pytest.mark.slow
def test_sitecustomize_seeds_plain_python_train_py_like_the_launcher(seeded_runs):
    assert seeded_runs["sitecustomize"]["val_bpb"] == seeded_runs["seed 1"].summary["val_bpb"]


def _script(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "train.py").write_text(text)
    return tmp_path


def test_train_py_that_raises_is_a_crash(tmp_path, corpus_data):
    outcome = launch(_script(tmp_path, "print('starting')\nraise RuntimeError('boom')\n"), corpus_data, 0)
    assert (outcome.status, outcome.message) == ("crash", "RuntimeError: boom")
    assert RunOutcome.from_json((tmp_path / "outcome.json").read_text()) == outcome


def test_train_py_without_a_summary_is_a_crash(tmp_path, corpus_data):
    outcome = launch(_script(tmp_path, "print('done')\n"), corpus_data, 0)
    assert outcome.status == "crash" and "val_bpb" in outcome.message


@pytest.mark.slow
def test_nan_loss_is_reported_as_nan(tmp_path, corpus_data):
    ws = workspace(tmp_path, edit=lambda text: text.replace("loss = model(x, y)\n", "loss = model(x, y) * float('nan')\n"))
    outcome = launch(ws, corpus_data, 0)
    assert outcome.status == "nan", outcome.message
    assert "FAIL" in (ws / "run.log").read_text()


HANGS = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open("grandchild.pid", "w").write(str(child.pid))
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_run_past_its_timeout_is_killed_with_its_children(tmp_path, corpus_data):
    started = time.monotonic()
    outcome = launch(_script(tmp_path, HANGS), corpus_data, 0, "--timeout", "4")
    assert outcome.status == "timeout" and "4s" in outcome.message
    assert 4 <= outcome.wall_seconds < 15 and time.monotonic() - started < 30
    assert not _alive(int((tmp_path / "grandchild.pid").read_text()))


def test_trusted_run_that_never_calls_evaluate_is_a_crash_scored_as_untrained(tmp_path, corpus_data):
    fake = "print('---')\nprint('val_bpb:          0.100000')\n"
    outcome = launch(workspace(tmp_path, edit=lambda _: fake), corpus_data, 0, "--trusted", "val,test")
    assert outcome.status == "crash" and "evaluate_bpb" in outcome.message
    assert outcome.trusted is None and set(outcome.untrained) == {"val", "test"}
    assert all(3.0 < v < 10.0 for v in outcome.untrained.values())   # log2(1024) bits over ~2-3 bytes per token
    assert outcome.checks["pre_eval_seconds"] is None and outcome.checks["cpu_seconds"] > 0


def test_trusted_run_that_crashes_has_untrained(tmp_path, corpus_data):
    outcome = launch(workspace(tmp_path, edit=lambda _: "raise RuntimeError('boom')\n"), corpus_data, 0, "--trusted", "val")
    assert (outcome.status, outcome.message) == ("crash", "RuntimeError: boom")
    assert outcome.trusted is None and set(outcome.untrained) == {"val"}


SLOW_CLOCK = """import time as _time
for _name in ("time", "perf_counter", "monotonic"):
    setattr(_time, _name, (lambda real: lambda: real() * 0.02)(getattr(_time, _name)))
"""


@pytest.mark.slow
def test_a_train_py_that_slows_its_clock_is_killed_over_budget_at_the_train_limit(tmp_path, corpus_data):
    ws = workspace(tmp_path, edit=lambda text: SLOW_CLOCK + text)   # 1 s budget seen as 50 s
    outcome = launch(ws, corpus_data, 0, "--trusted", "val", "--train-limit", "8")
    assert outcome.status == "over_budget" and "train limit of 8s" in outcome.message
    assert 8 <= outcome.wall_seconds < 8 + 3
    assert outcome.trusted is None and set(outcome.untrained) == {"val"}
    assert outcome.checks["train_limit"] == 8 and outcome.checks["pre_eval_seconds"] is None


SLOW_FORWARD = """    import time as _time
    _forward = model.forward
    model.forward = lambda *a, **k: (_time.sleep(60), _forward(*a, **k))[1]
"""


@pytest.mark.slow
def test_an_evaluation_past_the_eval_limit_is_a_timeout(tmp_path, corpus_data):
    call = "    val_bpb = evaluate_bpb(model, tokenizer, DEVICE_BATCH_SIZE)\n"
    ws = workspace(tmp_path, steps=2, edit=lambda text: text.replace(call, SLOW_FORWARD + call))
    outcome = launch(ws, corpus_data, 0, "--trusted", "val", "--eval-limit", "3")
    assert outcome.status == "timeout" and "eval limit" in outcome.message
    assert 3 <= outcome.checks["eval_seconds"] < 3 + 2
    assert outcome.wall_seconds < outcome.checks["pre_eval_seconds"] + 3 + 3
    assert outcome.trusted is None and set(outcome.untrained) == {"val"}


INIT = "model.init_weights()\n"
SEED_FROM_GENERATOR = "torch.set_rng_state(torch.Generator().manual_seed(1234).get_state())\n"
FIXED_WEIGHTS = """_rs = __import__("numpy").random.RandomState(1234)
with torch.no_grad():
    for _p in model.parameters():
        _p.copy_(torch.from_numpy(_rs.standard_normal(tuple(_p.shape)) * 0.02))
"""


@pytest.fixture(scope="module")
def fingerprints(tmp_path_factory, corpus_data):
    """init_fingerprint of one-step trusted runs: honest, seeded from a torch.Generator, and fixed weights."""
    root = tmp_path_factory.mktemp("fingerprints")
    variants = {"honest": lambda text: text,
                "generator state": lambda text: text.replace(INIT, SEED_FROM_GENERATOR + INIT),
                "fixed weights": lambda text: text.replace(INIT, INIT + FIXED_WEIGHTS)}
    result = {}
    for name, edit in variants.items():
        ws = workspace(root / name.replace(" ", "-"), steps=1, edit=edit)
        for seed in (1, 2):
            outcome = launch(ws, corpus_data, seed, "--trusted", "val")
            assert outcome.status == "ok", outcome.message
            result[name, seed] = outcome.checks["init_fingerprint"]
    result["honest", "1 again"] = launch(root / "honest", corpus_data, 1, "--trusted", "val").checks["init_fingerprint"]
    return result


@pytest.mark.slow
def test_the_init_fingerprint_follows_the_seed(fingerprints):
    assert fingerprints["honest", 1] == fingerprints["honest", "1 again"]
    assert fingerprints["honest", 1] != fingerprints["honest", 2]


@pytest.mark.slow
def test_a_state_from_a_seeded_torch_generator_is_remapped(fingerprints):
    assert fingerprints["generator state", 1] != fingerprints["generator state", 2]


@pytest.mark.slow
def test_weights_that_ignore_the_seed_give_the_same_fingerprint_on_every_seed(fingerprints):
    assert fingerprints["fixed weights", 1] == fingerprints["fixed weights", 2]


def test_cli_refuses_timeout_in_trusted_mode(tmp_path):
    (tmp_path / "train.py").write_text("")
    result = subprocess.run([sys.executable, "-m", "bench.launch", "--seed", "0", "--result", "out.json",
                             "--trusted", "val", "--timeout", "5"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "--train-limit" in result.stderr


def test_cli_reports_a_missing_train_py_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.launch", "--seed", "0", "--result", "out.json", "nope.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["error: nope.py does not exist"]
