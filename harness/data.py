"""Where a profile's prepared data lives on the host, and whether it is ready."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.profile import Profile
from bench.sources.base import seal_test_dir


DATA_TARGET, TEST_TARGET = "/data", "/heldout"   # where sandboxes see the data and the hidden test split


class DataMissing(RuntimeError):
    """The data or tokenizer a run needs has not been prepared."""


@dataclass(frozen=True)
class DataPaths:
    data_dir: Path       # train/, val/, tokenizer-<vocab>/: given read-only to agents
    test_dir: Path       # the hidden test split: only verification sandboxes see it
    tokenizer_dir: Path


def cache_dir() -> Path:
    return Path(os.environ.get("ARBENCH_CACHE", Path.home() / ".cache" / "autoresearch-bench"))


def data_paths(profile: Profile, source: str | None = None) -> DataPaths:
    source = source or profile.source
    data_dir = cache_dir() / "data" / source
    return DataPaths(data_dir=data_dir, test_dir=cache_dir() / "heldout" / source,
                     tokenizer_dir=data_dir / f"tokenizer-{profile.task['vocab_size']}")


def require_prepared(profile: Profile, source: str | None = None) -> DataPaths:
    """The profile's data paths, once everything is prepared; the test split's directory is sealed (0700) on the way,
    so data prepared before it was sealed is fixed too."""
    paths = data_paths(profile, source)
    seal_test_dir(paths.test_dir)
    needed = [paths.data_dir / "train", paths.data_dir / "val", paths.test_dir, paths.tokenizer_dir / "tokenizer.pkl"]
    missing = [p for p in needed if not p.exists() or (p.is_dir() and not any(p.glob("*.parquet")))]
    if missing:
        raise DataMissing(f"data for profile {profile.name} (source {source or profile.source}) is not prepared "
                          f"(missing {missing[0]}); run: python -m bench.prepare --profile {profile.name} "
                          f"--source {source or profile.source}")
    return paths
