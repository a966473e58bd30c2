"""bench/launch.py and bench/sitecustomize: seeds (determinism, remapping of seeds train.py sets), the run
ledger, and a RunOutcome for every kind of bad run (crash, NaN, timeout), never a hang."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launching import SITECUSTOMIZE_DIR, launch, run_env, workspace

from bench.launch import RunOutcome, classify, parse_summary
from harness.workspace import git

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
print(json.dumps({"unseeded": unseeded, "torch": t, "random": r, "numpy": n, "default_rng": g}))
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
    ledger = root / "ledger"
    return {
        "workspace": ws, "ledger": ledger,
        "seed 1": launch(ws, corpus_data, 1), "seed 1 again": launch(ws, corpus_data, 1),
        "seed 2": launch(ws, corpus_data, 2),
        "plain": parse_summary(_plain_run(ws, corpus_data)),
        "sitecustomize": parse_summary(_plain_run(ws, corpus_data, ARBENCH_SEED="1", ARBENCH_LEDGER=str(ledger),
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


@pytest.mark.slow
def test_sitecustomize_records_the_run_in_the_ledger(seeded_runs):
    records = [json.loads(p.read_text()) for p in seeded_runs["ledger"].glob("*.json")]
    assert len(records) == 1
    record = records[0]
    train_py = (seeded_runs["workspace"] / "train.py").read_bytes()
    assert record["train_py_sha256"] == hashlib.sha256(train_py).hexdigest()
    assert record["seed"] == 1 and record["status"] == "ok" and record["exit_code"] == 0
    assert record["summary"] == seeded_runs["sitecustomize"]
    assert record["started_at"] <= record["ended_at"]


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


def test_trusted_run_that_never_calls_evaluate_is_a_crash(tmp_path, corpus_data):
    fake = "print('---')\nprint('val_bpb:          0.100000')\n"
    outcome = launch(_script(tmp_path, fake), corpus_data, 0, "--trusted", "val")
    assert outcome.status == "crash" and "evaluate_bpb" in outcome.message
    assert outcome.trusted is None


def test_cli_reports_a_missing_train_py_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.launch", "--seed", "0", "--result", "out.json", "nope.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["error: nope.py does not exist"]


@pytest.mark.parametrize("script, exit_code, status, message", [
    ("raise ValueError('bad input')\n", 1, "crash", "ValueError: bad input"),
    ("print('FAIL')\nexit(1)\n", 1, "nan", "loss was NaN or exploded (train.py printed FAIL)"),
    ("import sys\nsys.exit(3)\n", 3, "crash", "exit code 3"),
])
def test_sitecustomize_records_how_a_run_ended(tmp_path, corpus_data, script, exit_code, status, message):
    ws, ledger = _script(tmp_path / "ws", script), tmp_path / "ledger"
    result = subprocess.run([sys.executable, "train.py"], cwd=ws, capture_output=True, timeout=120,
                            env=run_env(corpus_data, ARBENCH_SEED="0", ARBENCH_LEDGER=str(ledger),
                                        PYTHONPATH=str(SITECUSTOMIZE_DIR)))
    assert result.returncode == exit_code
    [record] = [json.loads(p.read_text()) for p in ledger.glob("*.json")]
    assert (record["exit_code"], record["status"], record["message"]) == (exit_code, status, message)
    assert record["ended_at"] is not None
    assert (record["head_commit"], record["dirty"]) == (None, None)  # not a git repository


def _recorded_run(ws: Path, ledger: Path, data) -> dict:
    before = set(ledger.glob("*.json"))
    subprocess.run([sys.executable, "train.py"], cwd=ws, capture_output=True, check=True, timeout=120,
                   env=run_env(data, ARBENCH_LEDGER=str(ledger), PYTHONPATH=str(SITECUSTOMIZE_DIR)))
    [path] = set(ledger.glob("*.json")) - before
    return json.loads(path.read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sitecustomize_records_the_workspace_as_the_run_found_it(tmp_path, corpus_data):
    """HEAD, whether train.py is committed, and the files that set the metric: prepare.py as `import prepare`
    would load it (here a package that shadows it) and profile.toml."""
    ws, ledger = _script(tmp_path / "ws", "print('---')\nprint('val_bpb: 1.0')\n"), tmp_path / "ledger"
    (ws / "prepare.py").write_text("X = 1\n")
    (ws / "profile.toml").write_text("name = 'p'\n")
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    head = git(ws, "rev-parse", "HEAD")
    record = _recorded_run(ws, ledger, corpus_data)
    assert (record["head_commit"], record["dirty"]) == (head, False)
    assert record["protected_sha256"] == {"prepare.py": _sha256(ws / "prepare.py"),
                                          "profile.toml": _sha256(ws / "profile.toml")}
    with open(ws / "train.py", "a") as f:
        f.write("# an uncommitted edit\n")
    (ws / "prepare").mkdir()
    (ws / "prepare" / "__init__.py").write_text("X = 2\n")
    record = _recorded_run(ws, ledger, corpus_data)
    assert (record["head_commit"], record["dirty"]) == (head, True)
    assert record["protected_sha256"]["prepare.py"] == _sha256(ws / "prepare" / "__init__.py")
