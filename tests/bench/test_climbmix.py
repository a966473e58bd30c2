"""The climbmix downloader against a local server: checksums, retries, resume, and bad shards never kept."""

from __future__ import annotations

import hashlib

import pytest
from rich.console import Console
from rich.progress import Progress

from bench.sources.base import DataError, FetchError, Layout, Manifest, Shard, prepare_data
from bench.sources.climbmix import ClimbMix

TRAIN0 = Shard("train", 0)


@pytest.fixture
def progress():
    with Progress(console=Console(quiet=True)) as p:
        yield p


def _source(server, attempts=3) -> ClimbMix:
    return ClimbMix(base_url=server.url, attempts=attempts, backoff=0.0, workers=2, timeout=5.0)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_prepare_downloads_train_val_and_test_into_separate_trees(shard_server, tmp_path, progress):
    layout = Layout(tmp_path / "data", tmp_path / "heldout")
    report = prepare_data(_source(shard_server), layout, 2, progress)
    assert sorted(report.fetched) == ["shard_06541.parquet", "train/shard_00000.parquet",
                                      "train/shard_00001.parquet", "val/shard_06542.parquet"]
    for shard in (Shard("train", 0), Shard("train", 1), Shard("val", 6542), Shard("test", 6541)):
        assert layout.path(shard).read_bytes() == shard_server.files[shard.filename]
    assert not list((tmp_path / "data").rglob("shard_06541*")), "test shard must not be in the data dir"
    manifest = Manifest.load(tmp_path / "data")
    assert manifest.files["train/shard_00001.parquet"]["sha256"] == _sha(shard_server.files["shard_00001.parquet"])
    assert Manifest.load(tmp_path / "heldout").files["shard_06541.parquet"]["sha256"] == \
        _sha(shard_server.files["shard_06541.parquet"])
    assert not list(tmp_path.rglob("*.tmp"))

    again = prepare_data(_source(shard_server), layout, 2, progress)
    assert again.fetched == [] and len(again.verified) == 4


def test_truncated_download_is_resumed_with_a_range_request(shard_server, tmp_path, progress):
    shard_server.faults["shard_00000.parquet"] = ["truncate"]
    dest = tmp_path / TRAIN0.filename
    _source(shard_server).fetch(TRAIN0, dest, progress)
    assert dest.read_bytes() == shard_server.files[TRAIN0.filename]
    cdn_requests = [r for r in shard_server.requests if r[0].startswith("/cdn/")]
    assert len(cdn_requests) == 2 and cdn_requests[1][1] is not None and cdn_requests[1][1] != "bytes=0-"


def test_always_truncated_shard_fails_clearly_and_is_not_kept(shard_server, tmp_path, progress):
    shard_server.faults["shard_00000.parquet"] = ["truncate"] * 10
    dest = tmp_path / TRAIN0.filename
    with pytest.raises(FetchError, match="attempt 3/3"):
        _source(shard_server).fetch(TRAIN0, dest, progress)
    assert not dest.exists()


def test_corrupt_shard_is_detected_by_checksum_and_deleted(shard_server, tmp_path, progress):
    shard_server.faults["shard_00000.parquet"] = ["corrupt"] * 10
    dest = tmp_path / TRAIN0.filename
    with pytest.raises(FetchError, match="checksum mismatch"):
        _source(shard_server).fetch(TRAIN0, dest, progress)
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_corrupt_then_good_is_retried(shard_server, tmp_path, progress):
    shard_server.faults["shard_00000.parquet"] = ["corrupt", "error500"]
    dest = tmp_path / TRAIN0.filename
    _source(shard_server).fetch(TRAIN0, dest, progress)
    assert _sha(dest.read_bytes()) == _sha(shard_server.files[TRAIN0.filename])


def test_without_announced_checksum_a_damaged_file_is_still_rejected(shard_server, tmp_path, progress):
    shard_server.announce_checksums = False
    shard_server.files["shard_00000.parquet"] = b"PAR1 this is not parquet"
    dest = tmp_path / TRAIN0.filename
    with pytest.raises(FetchError, match="not a readable parquet"):
        _source(shard_server, attempts=1).fetch(TRAIN0, dest, progress)
    assert not dest.exists()


def test_missing_shard_is_not_retried(shard_server, tmp_path, progress):
    with pytest.raises(FetchError, match="HTTP 404"):
        _source(shard_server).fetch(Shard("train", 5), tmp_path / "x.parquet", progress)
    assert len(shard_server.requests) == 1


def test_failed_shards_are_reported_and_the_good_ones_recorded(shard_server, tmp_path, progress):
    shard_server.faults["shard_00001.parquet"] = ["corrupt"] * 10
    layout = Layout(tmp_path / "data", tmp_path / "heldout")
    failed = r"1 of 4 shards failed \(run again to retry\): shard_00001.parquet: checksum mismatch"
    with pytest.raises(DataError, match=failed):
        prepare_data(_source(shard_server, attempts=2), layout, 2, progress)
    assert not (tmp_path / "data/train/shard_00001.parquet").exists()
    assert set(Manifest.load(tmp_path / "data").files) == {"train/shard_00000.parquet", "val/shard_06542.parquet"}


def test_file_damaged_on_disk_is_detected_and_fetched_again(shard_server, tmp_path, progress):
    layout = Layout(tmp_path / "data", tmp_path / "heldout")
    prepare_data(_source(shard_server), layout, 1, progress)
    path = layout.path(TRAIN0)
    path.write_bytes(path.read_bytes()[:-10])
    report = prepare_data(_source(shard_server), layout, 1, progress)
    assert report.fetched == ["train/shard_00000.parquet"]
    assert path.read_bytes() == shard_server.files[TRAIN0.filename]
