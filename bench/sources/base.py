"""What every data source shares: the shard layout on disk, atomic parquet writes, the manifest with
the sha256 of every file, and prepare_data(), which fetches what is missing or fails its checksum.

Layout (prepare.py reads the same paths):
    $ARBENCH_DATA_DIR/                  given to agents
        manifest.json                   source, metadata, files {relpath: {sha256, bytes}}
        train/shard_00000.parquet ...
        val/shard_NNNNN.parquet         the pinned validation shard
        tokenizer-<vocab>/              written by prepare.train_tokenizer
    $ARBENCH_TEST_DIR/                  never given to agents; 0700 (seal_test_dir): only its owner reads it
        manifest.json
        shard_NNNNN.parquet             the held-out test shard
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import Progress

Split = Literal["train", "val", "test"]
MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


class FetchError(RuntimeError):
    """One shard could not be obtained (after retries); the message says why, in one line."""


class DataError(RuntimeError):
    """The data directory cannot be prepared as asked; the message says why, in one line."""


@dataclass(frozen=True)
class Shard:
    split: Split
    index: int

    @property
    def filename(self) -> str:
        return f"shard_{self.index:05d}.parquet"


@dataclass(frozen=True)
class Layout:
    data_dir: Path
    test_dir: Path

    def root(self, shard: Shard) -> Path:
        return self.test_dir if shard.split == "test" else self.data_dir

    def relpath(self, shard: Shard) -> str:
        return shard.filename if shard.split == "test" else f"{shard.split}/{shard.filename}"

    def path(self, shard: Shard) -> Path:
        return self.root(shard) / self.relpath(shard)


@dataclass
class Manifest:
    source: str
    metadata: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)    # relpath -> {sha256, bytes}
    tokenizers: dict[str, str] = field(default_factory=dict)          # tokenizer dir -> digest of its train files
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def load(cls, root: Path) -> Manifest | None:
        path = root / MANIFEST
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(f"{path} is unreadable ({e}); delete it to prepare this directory again") from None

    def save(self, root: Path) -> None:
        atomic_write_bytes(root / MANIFEST, json.dumps(asdict(self), indent=1, sort_keys=True).encode())

    def record(self, root: Path, relpath: str) -> None:
        """Add a complete file's sha256 and size, and save."""
        path = root / relpath
        self.files[relpath] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        self.save(root)

    def verify(self, root: Path, relpath: str) -> str | None:
        """None if the file is present and matches its recorded sha256, else why not."""
        path, record = root / relpath, self.files.get(relpath)
        if not path.exists():
            return "missing"
        if record is None:
            return "present but not recorded (interrupted?)"
        digest = sha256_file(path)
        if digest != record["sha256"]:
            return f"checksum mismatch (recorded {record['sha256'][:12]}…, found {digest[:12]}…)"
        return None


class Source:
    """A data source: which shards it has, its metadata, and how to fetch one shard to a path."""

    name: ClassVar[str]

    def shards(self, train_shards: int) -> list[Shard]:
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        raise NotImplementedError

    def fetch(self, shard: Shard, dest: Path, progress: Progress) -> None:
        """Write the shard to dest atomically, or raise FetchError."""
        raise NotImplementedError

    def fetch_many(self, todo: list[tuple[Shard, Path]], progress: Progress) -> Iterator[tuple[Shard, str | None]]:
        """Fetch each shard; yield (shard, None) on success or (shard, reason) on failure."""
        for shard, dest in todo:
            try:
                self.fetch(shard, dest, progress)
                yield shard, None
            except FetchError as e:
                yield shard, str(e)


@dataclass
class DataReport:
    fetched: list[str]
    verified: list[str]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_shard(path: Path, texts: list[str], row_group_size: int = 1024) -> None:
    """Write documents as a parquet shard with one string column `text`; a kill leaves only a .tmp."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table({"text": pa.array(texts, type=pa.string())}), tmp, row_group_size=row_group_size)
    os.replace(tmp, path)


def open_manifest(root: Path, source: Source) -> Manifest:
    manifest = Manifest.load(root)
    if manifest is None:
        return Manifest(source=source.name, metadata=source.metadata())
    if manifest.source != source.name or manifest.metadata != source.metadata():
        raise DataError(f"{root} holds data of another source or version ({manifest.source}); "
                        f"delete it or point ARBENCH_DATA_DIR/ARBENCH_TEST_DIR elsewhere")
    return manifest


def seal_test_dir(test_dir: Path) -> None:
    """Make the held-out split's directory readable by its owner only (0700); idempotent. In docker verification the
    launcher, root in its container (the same uid as a root harness), reads it as its owner; the agent user running
    train.py cannot. A directory of another owner is left as it is (only its owner may change it)."""
    if test_dir.is_dir() and test_dir.stat().st_uid == os.geteuid() and test_dir.stat().st_mode & 0o777 != 0o700:
        test_dir.chmod(0o700)


def prepare_data(source: Source, layout: Layout, train_shards: int, progress: Progress) -> DataReport:
    """Make every shard of the source present and verified; fetch the missing or corrupt ones."""
    return prepare_shards(source, layout, source.shards(train_shards), progress)


def prepare_shards(source: Source, layout: Layout, shards: list[Shard], progress: Progress) -> DataReport:
    """Make these shards of the source present and verified; fetch the missing or corrupt ones."""
    layout.test_dir.mkdir(parents=True, exist_ok=True)
    seal_test_dir(layout.test_dir)
    manifests = {root: open_manifest(root, source) for root in (layout.data_dir, layout.test_dir)}
    report, todo = DataReport(fetched=[], verified=[]), []
    for shard in shards:
        root, relpath = layout.root(shard), layout.relpath(shard)
        problem = manifests[root].verify(root, relpath)
        if problem is None:
            report.verified.append(relpath)
            continue
        if problem != "missing":
            progress.console.print(f"Data: {layout.path(shard)}: {problem}; fetching it again")
            layout.path(shard).unlink()
        layout.path(shard).parent.mkdir(parents=True, exist_ok=True)
        todo.append((shard, layout.path(shard)))
    if todo:
        _fetch(source, layout, todo, manifests, report, progress)
    return report


def _fetch(source, layout, todo, manifests, report, progress) -> None:
    task = progress.add_task(f"Data: {source.name}", total=len(todo))
    failures = []
    for shard, error in source.fetch_many(todo, progress):
        done = len(report.fetched) + len(failures) + 1
        if error is None:
            manifests[layout.root(shard)].record(layout.root(shard), layout.relpath(shard))
            report.fetched.append(layout.relpath(shard))
            progress.console.print(f"Data: {layout.path(shard)} written and recorded ({done}/{len(todo)})")
        else:
            failures.append(f"{shard.filename}: {error}")
            progress.console.print(f"Data: {shard.filename} failed: {error} ({done}/{len(todo)})")
        progress.advance(task)
    if failures:
        raise DataError(f"{len(failures)} of {len(todo)} shards failed (run again to retry): "
                        + "; ".join(sorted(failures)))
