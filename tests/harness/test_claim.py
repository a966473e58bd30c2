"""`arbench verify` reading real git forks: results.tsv by header name, branches, missing commits, the task a fork
changed, and the claim block (`--claim-only`) through the CLI. Nothing here trains."""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.original import CONSTANTS
from bench.profile import load_profile
from harness.cli import app
from bench.contracts import ResultRow, parse_results
from harness.fork import read_constants
from harness.workspace import git, make_workspace
from support import fast_profile

# A fork's prepare.py in the original's shape (constants as karpathy/autoresearch writes them).
PREPARE = '''"""One-time data preparation for autoresearch experiments."""
import os

MAX_SEQ_LEN = 2048       # context length
TIME_BUDGET = 300        # training time budget in seconds (5 minutes)
EVAL_TOKENS = 40 * 524288  # number of tokens for val eval

CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "autoresearch")
BASE_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
MAX_SHARD = 6542 # the last datashard is shard_06542.parquet
VAL_SHARD = MAX_SHARD  # pinned validation shard (shard_06542)
VAL_FILENAME = f"shard_{VAL_SHARD:05d}.parquet"
VOCAB_SIZE = 8192
'''
TRAIN = "from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, make_dataloader, evaluate_bpb\nDEPTH = 8\n"
HEADER = ["commit", "val_bpb", "memory_gb", "status", "description"]


def make_fork(root: Path, experiments: list[dict[str, str]], branch: str = "autoresearch/mar5",
              prepare: str = PREPARE) -> tuple[Path, list[str]]:
    """A fork of the original on `branch`: the baseline commit, then one commit per experiment (files to write);
    the short hashes, baseline first."""
    repo = root / "fork"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "master")
    git(repo, "config", "user.name", "t")
    git(repo, "config", "user.email", "t@t")
    for name, text in {"prepare.py": prepare, "train.py": TRAIN, "program.md": "# autoresearch\n"}.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline")
    git(repo, "checkout", "-qb", branch)
    shas = [git(repo, "rev-parse", "--short=7", "HEAD")]
    for i, files in enumerate(experiments):
        files = files or {"train.py": TRAIN + f"# experiment {i}\n"}
        for name, text in files.items():
            (repo / name).write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"experiment {i}")
        shas.append(git(repo, "rev-parse", "--short=7", "HEAD"))
    return repo, shas


def write_results(repo: Path, header: list[str], rows: list[list[str]], newline: str = "\n") -> None:
    (repo / "results.tsv").write_text(newline.join("\t".join(cells) for cells in [header, *rows]) + newline)


def standard_rows(shas: list[str]) -> list[list[str]]:
    """Baseline, a keep, a discard and a crash row in the original's five columns."""
    return [[shas[0], "0.997900", "44.0", "keep", "baseline"],
            [shas[1], "0.993200", "44.2", "keep", "increase LR"],
            [shas[1], "1.005000", "44.0", "discard", "switch to GeLU"],
            [shas[1], "0.000000", "0.0", "crash", "double width (OOM)"]]


def claim_only(repo: Path, *args: str):
    return CliRunner().invoke(app, ["verify", str(repo), "--claim-only", *args])


# ---------------------------------------------------------------------------
# results.tsv
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("header, cells", [
    (["commit", "val_bpb", "memory_gb", "mfu", "tok_per_sec", "status", "description"],
     lambda c: [c[0], c[1], c[2], "39.8", "512000", c[3], c[4]]),
    (["commit", "val_bpb", "memory_gb", "status", "description", "artifact_mb"],
     lambda c: [*c, "15.9"]),
])
def test_extra_columns_are_found_by_name_and_kept(tmp_path, header, cells):
    repo, shas = make_fork(tmp_path, [{}])
    write_results(repo, header, [cells(row) for row in standard_rows(shas)])
    rows, problems = parse_results((repo / "results.tsv").read_text())
    assert problems == [] and [r.status for r in rows] == ["keep", "keep", "discard", "crash"]
    extra = set(header) - set(HEADER)
    assert set(rows[0].extra) == extra and rows[1].val_bpb == 0.9932 and rows[1].description == "increase LR"
    result = claim_only(repo)
    assert result.exit_code == 0, result.output
    assert "claimed gain: +0.004700 bpb" in result.stdout
    assert "1 keep, 1 discard, 1 crash" in result.stdout and "warning" not in result.output


def test_crlf_trailing_whitespace_and_quoted_tabs(tmp_path):
    repo, shas = make_fork(tmp_path, [{}])
    rows = standard_rows(shas)
    rows[1][4] = '"increase LR\tto 0.04"'       # csv-style quoting keeps the tab inside the description
    rows[2][4] += "   "                          # trailing whitespace
    write_results(repo, HEADER, rows, newline="\r\n")
    text = (repo / "results.tsv").read_bytes().decode()
    assert text.count("\r\n") == 5
    parsed, problems = parse_results(text)
    assert problems == [] and [r.description for r in parsed[1:3]] == ["increase LR\tto 0.04", "switch to GeLU"]
    assert [r.line_no for r in parsed] == [2, 3, 4, 5]
    result = claim_only(repo)
    assert result.exit_code == 0 and "claimed gain: +0.004700 bpb" in result.stdout, result.output


def test_our_five_column_rows_still_round_trip():
    row = ResultRow("a1b2c3d", 0.9979, 44.0, "keep", "baseline")
    assert parse_results("\t".join(HEADER) + "\n" + row.to_line()) == ([row], [])


def test_a_non_numeric_baseline_stops_and_a_later_one_is_reported(tmp_path):
    repo, shas = make_fork(tmp_path, [{}])
    rows = standard_rows(shas)
    write_results(repo, HEADER, [[shas[0], "abc", "44.0", "keep", "baseline"], *rows[1:]])
    result = claim_only(repo)
    assert result.exit_code == 2 and "line 2" in result.stderr and "baseline" in result.stderr, result.output
    assert "'abc'" in result.stderr and "claimed gain" not in result.stdout   # the next row never became the baseline

    rows[2][1] = "N/A"
    write_results(repo, HEADER, rows)
    result = claim_only(repo)
    assert result.exit_code == 0, result.output
    assert "line 4" in result.stderr and "'N/A'" in result.stderr and "not used" in result.stderr
    assert "1 keep, 0 discard, 1 crash" in result.stdout and "malformed rows not used: 1" in result.stdout


def test_a_baseline_row_that_names_no_commit_is_the_first_experiments_parent(tmp_path):
    """karpathy's own experiment branch writes `baseline` in the commit column of the first row."""
    repo, shas = make_fork(tmp_path, [{}])
    rows = standard_rows(shas)
    rows[0][0] = "baseline"
    write_results(repo, HEADER, rows)
    result = claim_only(repo)
    assert result.exit_code == 0, result.output
    assert f"baseline    {shas[0]}" in result.stdout and f"taken to be {shas[0]}" in result.stderr
    rows[1][0] = "baseline"   # only the first row may name no commit
    write_results(repo, HEADER, rows)
    assert "line 3: commit 'baseline' is not a hex hash" in claim_only(repo).stderr


def test_a_header_without_a_required_column_is_one_clear_error(tmp_path):
    repo, shas = make_fork(tmp_path, [{}])
    write_results(repo, ["commit", "bpb", "status"], [[shas[0], "0.99", "keep"]])
    result = claim_only(repo)
    assert result.exit_code == 2 and "line 1" in result.stderr and "val_bpb" in result.stderr, result.output


# ---------------------------------------------------------------------------
# Branches and commits
# ---------------------------------------------------------------------------

def test_experiments_only_on_the_remote_branch_of_a_fresh_clone(tmp_path):
    fork, shas = make_fork(tmp_path, [{}], branch="autoresearch/mar5")
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "master", str(origin))
    git(fork, "push", "-q", str(origin), "master", "autoresearch/mar5")
    git(tmp_path, "clone", "-q", str(origin), str(tmp_path / "clone"))
    clone = tmp_path / "clone"
    write_results(clone, HEADER, standard_rows(shas))
    assert git(clone, "branch", "--list", "autoresearch/*") == ""   # only origin/autoresearch/mar5
    for branch in ("autoresearch/mar5", "origin/autoresearch/mar5", "mar5"):
        result = claim_only(clone, "--branch", branch)
        assert result.exit_code == 0, (branch, result.output)
        assert "claimed gain: +0.004700 bpb" in result.stdout
    wrong = claim_only(clone, "--branch", "autoresearch/mar6")
    assert wrong.exit_code == 2 and "origin/autoresearch/mar5" in wrong.stderr, wrong.output


def test_the_best_commit_must_be_on_the_branch(tmp_path):
    repo, shas = make_fork(tmp_path, [{}])
    git(repo, "branch", "autoresearch/other", shas[0])
    write_results(repo, HEADER, standard_rows(shas))
    result = claim_only(repo, "--branch", "autoresearch/other")
    assert result.exit_code == 2 and "best commit" in result.stderr and shas[1] in result.stderr, result.output
    assert "autoresearch/mar5" in result.stderr


def test_commits_that_were_never_pushed_are_counted(tmp_path):
    repo, _ = make_fork(tmp_path, [{}])
    unknown = [f"{i}a{i}b{i}c{i}" for i in range(2)]
    write_results(repo, HEADER, standard_rows(unknown))
    result = claim_only(repo)
    assert result.exit_code == 1, result.output
    assert "2 of 2 commits named in results.tsv are not in this repository: its experiment history was not pushed" \
        in result.stdout
    assert f"the baseline {unknown[0]}" in result.stdout and f"the best {unknown[1]}" in result.stdout
    full = CliRunner().invoke(app, ["verify", str(repo), "--profile", "cpu-tiny"])
    assert full.exit_code == 1 and "not verified" in full.stdout, full.output


def test_missing_discarded_commits_are_a_warning(tmp_path):
    repo, shas = make_fork(tmp_path, [{}])
    rows = standard_rows(shas) + [["deadbee", "1.010000", "44.0", "discard", "reset away, never pushed"]]
    write_results(repo, HEADER, rows)
    result = claim_only(repo)
    assert result.exit_code == 0, result.output
    assert "1 of 3 commits named in results.tsv are not in this repository" in result.stderr


# ---------------------------------------------------------------------------
# The task a fork changed
# ---------------------------------------------------------------------------

def test_an_unchanged_fork_maps_to_h100_with_its_noise_floor(tmp_path):
    repo, shas = make_fork(tmp_path, [{}])
    write_results(repo, HEADER, standard_rows(shas))
    result = claim_only(repo)
    assert result.exit_code == 0, result.output
    assert "constants as the original's" in result.stdout and "the claim maps to h100" in result.stdout
    assert "sigma 0.000300" in result.stdout and "over 2 experiments" in result.stdout
    assert "changed the task" not in result.stdout
    assert "sigma 0.001000: --sigma" in claim_only(repo, "--sigma", "0.001").stdout
    unknown = claim_only(repo, "--profile", "cpu-tiny")
    assert "no known noise floor" in unknown.stdout and "verification runs on cpu-tiny" in unknown.stdout


def test_a_train_py_importing_what_the_task_lacks_is_refused_before_training(tmp_path):
    imports = TRAIN.replace("evaluate_bpb", "evaluate_bpb, EVAL_BATCH_SIZE\nimport helpers")
    repo, shas = make_fork(tmp_path, [{"train.py": imports, "helpers.py": "X = 1\n"}])
    write_results(repo, HEADER, standard_rows(shas))
    result = claim_only(repo)
    assert result.exit_code == 1, result.output
    assert "prepare.EVAL_BATCH_SIZE" in result.stdout and "module helpers" in result.stdout
    assert "changed the task" in result.stdout and "not comparable to the original's" in result.stdout
    assert "helpers.py" in result.stdout   # a file changed along the branch
    full = CliRunner().invoke(app, ["verify", str(repo)])   # h100 on a host without its data: nothing is asked of it
    assert full.exit_code == 1 and "not verified" in full.stdout and "EVAL_BATCH_SIZE" in full.stdout, full.output


def test_a_prepare_py_with_a_changed_time_budget(tmp_path):
    longer = PREPARE.replace("TIME_BUDGET = 300", "TIME_BUDGET = 10 * 60")
    repo, shas = make_fork(tmp_path, [{"prepare.py": longer, "train.py": TRAIN + "# longer\n"}])
    write_results(repo, HEADER, standard_rows(shas))
    result = claim_only(repo)
    assert result.exit_code == 1, result.output
    assert "TIME_BUDGET = 600 (original: 300)" in result.stdout and "prepare.py" in result.stdout
    assert "maps to none of our profiles" in result.stdout and "changed the task" in result.stdout


def test_a_prepare_py_that_cannot_be_read_is_said_so(tmp_path):
    from_env = PREPARE.replace("VOCAB_SIZE = 8192", "VOCAB_SIZE = int(os.environ['V'])")
    repo, shas = make_fork(tmp_path, [{}], prepare=from_env)
    write_results(repo, HEADER, standard_rows(shas))
    result = claim_only(repo)
    assert result.exit_code == 1 and "VOCAB_SIZE is not a literal" in result.stdout, result.output
    assert "not confirmed" in result.stdout


def test_constants_are_read_as_literals_never_run():
    values, problems = read_constants(PREPARE)
    assert values == CONSTANTS and problems == []
    values, problems = read_constants("TIME_BUDGET = 2 ** 3 - 1.5\nMAX_SEQ_LEN = open('x').read()\n")
    assert values == {"TIME_BUDGET": 6.5}
    assert "MAX_SEQ_LEN is not a literal: open('x').read()" in problems
    assert "VOCAB_SIZE is not set at module level" in problems
    assert read_constants("MAX_SEQ_LEN = (")[1][0].startswith("prepare.py does not parse")


def test_one_of_our_workspaces_is_read_by_its_profile_toml(tmp_path):
    repo = tmp_path / "ws"
    base = make_workspace(repo, fast_profile(), tag="t")
    write_results(repo, HEADER, [[base.commit[:7], "3.500000", "0.5", "keep", "baseline"]])
    result = claim_only(repo)
    assert result.exit_code == 0, result.output
    assert "profile.toml (profile cpu-tiny-test)" in result.stdout
    assert "verification runs on cpu-tiny-test" in result.stdout and "task is unchanged" in result.stdout
    assert "claimed gain: +0.000000 bpb" in result.stdout


# ---------------------------------------------------------------------------
# The host: a GPU, prepared data
# ---------------------------------------------------------------------------

def fake_nvidia_smi(tmp_path: Path, monkeypatch, listing: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_a_gpu_profile_on_a_host_without_one_points_at_claim_only(tmp_path, monkeypatch):
    repo, shas = make_fork(tmp_path, [{}])
    write_results(repo, HEADER, standard_rows(shas))
    fake_nvidia_smi(tmp_path, monkeypatch, "")
    result = CliRunner().invoke(app, ["verify", str(repo)])
    assert result.exit_code == 2 and "needs a GPU" in result.stderr and "--claim-only" in result.stderr, result.output
    assert "claimed gain" in result.stdout   # the claim block came first


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def answering_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("reachable", [False, True])
def test_missing_data_names_the_command_and_whether_the_source_answers(tmp_path, monkeypatch, reachable, request):
    repo, shas = make_fork(tmp_path, [{}])
    write_results(repo, HEADER, standard_rows(shas))
    fake_nvidia_smi(tmp_path, monkeypatch, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-fake-0)\\n")
    url = request.getfixturevalue("answering_server") if reachable else f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("ARBENCH_CLIMBMIX_URL", url)
    monkeypatch.setenv("ARBENCH_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["verify", str(repo)])
    assert result.exit_code == 2, result.output
    assert "python -m bench.prepare --profile h100 --source climbmix" in result.stderr
    assert ("unreachable from this machine" in result.stderr) is not reachable
    if not reachable:
        assert str(tmp_path / "cache" / "data" / "climbmix") in result.stderr


def test_machine_keys_of_a_profile_stay_out_of_its_hash():
    h100 = load_profile("h100")
    assert h100.needs_gpu and h100.noise_sigma == 3e-4 and not load_profile("cpu-tiny").needs_gpu
    assert dataclasses.replace(h100, needs_gpu=False, noise_sigma=None).hash == h100.hash


def test_missing_data_of_a_profile_read_from_a_path_names_that_path(tmp_path, monkeypatch):
    """`--profile NAME` finds only bench/profiles: a profile file elsewhere is named by its path."""
    from harness.data import DataMissing, require_prepared
    mine = tmp_path / "mine.toml"
    mine.write_text((Path(load_profile("cpu-tiny").origin)).read_text())
    monkeypatch.setenv("ARBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataMissing, match=f"--profile {mine} --source corpus"):
        require_prepared(load_profile(mine))
    with pytest.raises(DataMissing, match="--profile cpu-tiny --source corpus"):
        require_prepared(load_profile("cpu-tiny"))
