"""bench/prepare.py offers every name of the original's prepare.py (bench/original.py PREPARE_EXPORTS) with the same
meaning: functions a call written for the original binds to, the original's constants, list_parquet_files() over
train and val, and the climbmix downloads (against a local stand-in for the host)."""

from __future__ import annotations

import inspect

import pytest

import bench.prepare
from bench.original import CONSTANTS, PREPARE_EXPORTS
from bench.sources.base import Layout, Shard
from bench.sources.cli import load_prepare_module
from bench.sources.climbmix import ClimbMix

# The signatures of the original's functions at bench.original.ORIGINAL_COMMIT, copied from its prepare.py.
ORIGINAL_SIGNATURES = '''
def download_single_shard(index): ...
def download_data(num_shards, download_workers=8): ...
def list_parquet_files(): ...
def text_iterator(max_chars=1_000_000_000, doc_cap=10_000): ...
def train_tokenizer(): ...
def get_token_bytes(device="cpu"): ...
def make_dataloader(tokenizer, B, T, split, buffer_size=1000): ...
def evaluate_bpb(model, tokenizer, batch_size): ...

class Tokenizer:
    def __init__(self, enc): ...
    @classmethod
    def from_directory(cls, tokenizer_dir=TOKENIZER_DIR): ...
    def get_vocab_size(self): ...
    def get_bos_token_id(self): ...
    def encode(self, text, prepend=None, num_threads=8): ...
    def decode(self, ids): ...
'''


def original_functions() -> dict[str, object]:
    """name -> the original's stub; a method as Class.method."""
    namespace = {"TOKENIZER_DIR": bench.prepare.TOKENIZER_DIR}   # the same meaning: the prepared tokenizer's directory
    exec(ORIGINAL_SIGNATURES, namespace)
    found = {name: f for name, f in namespace.items() if inspect.isfunction(f)}
    for name, member in vars(namespace["Tokenizer"]).items():
        if inspect.isfunction(member) or isinstance(member, classmethod):
            found[f"Tokenizer.{name}"] = getattr(namespace["Tokenizer"], name)
    return found | {"Tokenizer": namespace["Tokenizer"]}


def incompatibilities(ours, original) -> list[str]:
    """How a call written for `original` could fail to bind to `ours`, or bind differently (empty: it cannot)."""
    mine = list(inspect.signature(ours).parameters.values())
    theirs = list(inspect.signature(original).parameters.values())
    problems = []
    for position, param in enumerate(theirs):
        if position >= len(mine) or mine[position].name != param.name or mine[position].kind != param.kind:
            problems.append(f"parameter {position} is not {param.name}")
        elif param.default is not inspect.Parameter.empty and mine[position].default != param.default:
            problems.append(f"{param.name} defaults to {mine[position].default!r}, not {param.default!r}")
    return problems + [f"added parameter {p.name} has no default" for p in mine[len(theirs):]
                       if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_every_name_of_the_original_is_exported():
    assert sorted(name for name in PREPARE_EXPORTS if not hasattr(bench.prepare, name)) == []


def test_each_function_of_the_original_takes_the_originals_calls():
    originals = original_functions()
    assert {n for n in PREPARE_EXPORTS if callable(getattr(bench.prepare, n))} == {n for n in originals if "." not in n}
    problems = {}
    for name, original in originals.items():
        ours = bench.prepare
        for part in name.split("."):
            ours = getattr(ours, part)
        if found := incompatibilities(ours, original):
            problems[name] = found
    assert problems == {}


def test_the_compatibility_check_catches_what_would_break_a_call():
    def original(tokenizer, B, T, split, buffer_size=1000): ...
    def renamed(tokenizer, batch, T, split, buffer_size=1000): ...
    def other_default(tokenizer, B, T, split, buffer_size=64): ...
    def required_extra(tokenizer, B, T, split, buffer_size=1000, device=...): ...
    def needs_more(tokenizer, B, T, split, buffer_size=1000, *, device): ...
    assert incompatibilities(renamed, original) == ["parameter 1 is not B"]
    assert incompatibilities(other_default, original) == ["buffer_size defaults to 64, not 1000"]
    assert incompatibilities(required_extra, original) == []
    assert incompatibilities(needs_more, original) == ["added parameter device has no default"]


def test_the_data_constants_are_the_originals_and_name_climbmixs_val_shard(monkeypatch):
    for name in ("BASE_URL", "MAX_SHARD", "VAL_SHARD", "VAL_FILENAME"):
        assert getattr(bench.prepare, name) == CONSTANTS[name], name
    monkeypatch.delenv("ARBENCH_CLIMBMIX_URL", raising=False)
    source, val = ClimbMix(), Shard("val", bench.prepare.VAL_SHARD)
    assert source.base_url == bench.prepare.BASE_URL   # where our downloader fetches climbmix from
    assert val in source.shards(1) and val.filename == bench.prepare.VAL_FILENAME


def test_the_h100_profile_has_the_originals_task_constants():
    prep = load_prepare_module("h100", "climbmix")
    for name in ("MAX_SEQ_LEN", "TIME_BUDGET", "EVAL_TOKENS", "VOCAB_SIZE"):
        assert getattr(prep, name) == CONSTANTS[name], name


def test_list_parquet_files_without_a_split_is_every_shard_of_the_data_dir(corpus_data, monkeypatch):
    monkeypatch.setenv("ARBENCH_DATA_DIR", str(corpus_data.data_dir))
    monkeypatch.setenv("ARBENCH_TEST_DIR", str(corpus_data.test_dir))
    prep = load_prepare_module("cpu-tiny", "corpus")
    train, val, test = (prep.list_parquet_files(split) for split in ("train", "val", "test"))
    assert train and val and test
    assert prep.list_parquet_files() == train + val   # the original's data dir holds train and val, no test split
    assert all(path.startswith(str(corpus_data.data_dir)) for path in train + val)


@pytest.fixture
def climbmix_prepare(shard_server, tmp_path, monkeypatch):
    """bench/prepare.py for the h100 profile (climbmix) with its data in tmp_path, downloading from shard_server."""
    monkeypatch.setenv("ARBENCH_CLIMBMIX_URL", shard_server.url)
    monkeypatch.setenv("ARBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ARBENCH_TEST_DIR", str(tmp_path / "heldout"))
    return load_prepare_module("h100", "climbmix"), Layout(tmp_path / "data", tmp_path / "heldout")


def test_download_single_shard_puts_a_shard_where_its_split_goes(climbmix_prepare, shard_server):
    prep, layout = climbmix_prepare
    assert prep.download_single_shard(1) is True and prep.download_single_shard(prep.VAL_SHARD) is True
    assert layout.path(Shard("train", 1)).read_bytes() == shard_server.files["shard_00001.parquet"]
    assert layout.path(Shard("val", prep.VAL_SHARD)).read_bytes() == shard_server.files[prep.VAL_FILENAME]
    assert prep.download_single_shard(1) is True                 # present and verified: nothing fetched
    assert prep.download_single_shard(5) is False                # the host has no such shard


def test_download_data_gets_train_shards_and_the_pinned_val_shard(climbmix_prepare, shard_server):
    prep, layout = climbmix_prepare
    prep.download_data(2, download_workers=2)
    assert [p.rsplit("/", 2)[1:] for p in prep.list_parquet_files()] == [
        ["train", "shard_00000.parquet"], ["train", "shard_00001.parquet"], ["val", prep.VAL_FILENAME]]
    assert layout.path(Shard("test", prep.MAX_SHARD - 1)).exists()   # and ours: the hidden test shard, apart
