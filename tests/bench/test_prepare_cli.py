"""`python -m bench.prepare`: idempotent, resumable after kill -9, checksums verified, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.sources.cli import main

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBENCH_")}
    return env | {"ARBENCH_CACHE": str(tmp_path / "cache")} | extra


def _prepare(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.prepare", *args], cwd=REPO, env=_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=120)


def _tiny_profile(tmp_path: Path, source: str) -> str:
    path = tmp_path / f"tiny-{source}.toml"
    path.write_text(f'name = "tiny"\n[task]\nmax_seq_len = 64\ntime_budget = 1\neval_tokens = 4096\n'
                    f'vocab_size = 300\n[data]\nsource = "{source}"\ntrain_shards = 1\n')
    return str(path)


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_cpu_tiny_corpus_is_prepared_once_then_nothing_to_do(tmp_path):
    first = _prepare(tmp_path, "--profile", "cpu-tiny", "--source", "corpus")
    assert first.returncode == 0, first.stdout + first.stderr
    data, heldout = tmp_path / "cache/data/corpus", tmp_path / "cache/heldout/corpus"
    assert sorted(p.name for p in (data / "train").iterdir()) == [f"shard_0000{i}.parquet" for i in range(4)]
    assert [p.name for p in (data / "val").iterdir()] == ["shard_00005.parquet"]
    assert sorted(p.name for p in heldout.iterdir()) == ["manifest.json", "shard_00004.parquet"]
    assert (data / "tokenizer-1024/tokenizer.pkl").exists() and (data / "tokenizer-1024/token_bytes.pt").exists()
    assert heldout.stat().st_mode & 0o777 == 0o700   # the test split: its owner only, never the agent user
    before = _snapshot(tmp_path / "cache")
    heldout.chmod(0o755)   # as prepared before the directory was sealed

    second = _prepare(tmp_path, "--profile", "cpu-tiny", "--source", "corpus")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Nothing to do" in second.stdout and "6 already present and verified" in second.stdout
    assert _snapshot(tmp_path / "cache") == before and heldout.stat().st_mode & 0o777 == 0o700


def test_damaged_and_interrupted_files_are_repaired_and_other_versions_refused(tmp_path):
    profile = _tiny_profile(tmp_path, "corpus")
    assert _prepare(tmp_path, "--profile", profile).returncode == 0
    data = tmp_path / "cache/data/corpus"
    manifest = json.loads((data / "manifest.json").read_text())
    val = data / "val/shard_00005.parquet"
    val.write_bytes(val.read_bytes()[:-100])                       # damaged
    (data / "train/shard_00000.parquet").unlink()                  # lost
    (data / "train/shard_00000.parquet.tmp").write_bytes(b"half")  # left by a kill
    (data / "tokenizer-300/token_bytes.pt").unlink()

    again = _prepare(tmp_path, "--profile", profile)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "val/shard_00005.parquet: checksum mismatch" in again.stdout
    assert "Tokenizer: trained" in again.stdout
    assert json.loads((data / "manifest.json").read_text())["files"] == manifest["files"]
    assert not list(data.rglob("*.tmp"))

    manifest["metadata"]["tree_sha256"] = "0" * 64                 # as if made by another corpus version
    (data / "manifest.json").write_text(json.dumps(manifest))
    refused = _prepare(tmp_path, "--profile", profile)
    assert refused.returncode == 1 and "holds data of another source or version" in refused.stderr


def test_synthetic_records_its_entropy_in_the_manifest(tmp_path):
    result = _prepare(tmp_path, "--profile", _tiny_profile(tmp_path, "synthetic"))
    assert result.returncode == 0, result.stdout + result.stderr
    metadata = json.loads((tmp_path / "cache/data/synthetic/manifest.json").read_text())["metadata"]
    assert 2.0 < metadata["entropy_bits_per_byte"] < metadata["best_val_bpb"] < 3.0
    assert (tmp_path / "cache/heldout/synthetic/shard_99998.parquet").exists()


@pytest.mark.parametrize("args, known", [(["--source", "nope"], "known: climbmix, corpus, synthetic"),
                                         (["--profile", "nope"], "known: cpu-tiny")])
def test_bad_input_is_one_clear_line(capsys, args, known):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    output = capsys.readouterr()
    assert output.out == "" and known in output.err and len(output.err.strip().splitlines()) == 1


def test_climbmix_download_resumes_after_kill_9(tmp_path, shard_server):
    profile = _tiny_profile(tmp_path, "climbmix")
    shard_server.faults["shard_00000.parquet"] = ["slow"]
    command = [sys.executable, "-m", "bench.prepare", "--profile", profile]
    env = _env(tmp_path, ARBENCH_CLIMBMIX_URL=shard_server.url)
    partial = tmp_path / "cache/data/climbmix/train/shard_00000.parquet.tmp"
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial.exists() and not partial.with_suffix("").exists()

    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    data = tmp_path / "cache/data/climbmix"
    assert (data / "train/shard_00000.parquet").read_bytes() == shard_server.files["shard_00000.parquet"]
    resumed = [r for path, r in shard_server.requests if path == "/cdn/shard_00000.parquet" and r]
    assert resumed and int(resumed[-1].removeprefix("bytes=").rstrip("-")) > 0
    assert (tmp_path / "cache/heldout/climbmix/shard_06541.parquet").exists()
    assert (data / "tokenizer-300/tokenizer.pkl").exists()


def test_concurrent_prepares_of_one_directory_both_succeed(tmp_path):
    profile = _tiny_profile(tmp_path, "corpus")
    command = [sys.executable, "-m", "bench.prepare", "--profile", profile]
    processes = [subprocess.Popen(command, cwd=REPO, env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert sum("Tokenizer: trained" in out for out in outputs) == 1



def test_too_little_training_text_for_the_vocabulary_is_a_clear_error(tmp_path):
    profile = tmp_path / "big-vocab.toml"
    profile.write_text('name = "big"\n[task]\nmax_seq_len = 64\ntime_budget = 1\neval_tokens = 4096\n'
                       'vocab_size = 65536\n[data]\nsource = "corpus"\ntrain_shards = 1\n')
    result = _prepare(tmp_path, "--profile", str(profile))
    assert result.returncode == 1
    assert "the profile needs vocab_size=65536: prepare more training data" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache/data/corpus/tokenizer-65536/tokenizer.pkl").exists()
