"""Where a profile's prepared data lives on the host, and whether it is ready.

Nothing here downloads: data missing is a DataMissing whose message is the command that prepares it, and, for a
source that downloads (one with a base_url), whether that source answers from this machine at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.profile import Profile
from bench.sources import SOURCES, get_source
from bench.sources.base import seal_test_dir


DATA_TARGET, TEST_TARGET = "/data", "/heldout"   # where sandboxes see the data and the hidden test split
REACH_TIMEOUT_S = 5.0   # how long a network source may take to answer before it counts as unreachable


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
        raise DataMissing(_missing_message(profile, source or profile.source, paths, missing[0]))
    return paths


def _missing_message(profile: Profile, source: str, paths: DataPaths, first_missing: Path) -> str:
    command = f"python -m bench.prepare --profile {profile.cli_name} --source {source}"
    message = f"data for profile {profile.name} (source {source}) is not prepared (missing {first_missing}); "
    url = getattr(get_source(source), "base_url", None) if source in SOURCES else None
    if url is None or _reachable(url):
        return message + f"run: {command}"
    return message + (f"its source {url} is unreachable from this machine, so no download can work here: run "
                      f"`{command}` where there is network, then copy {paths.data_dir} and {paths.test_dir} "
                      f"to the same places here (or set ARBENCH_CACHE to a copy of {cache_dir()})")


def _reachable(url: str) -> bool:
    """Whether an HTTP server answers at url within REACH_TIMEOUT_S (any status counts: it answered)."""
    try:
        httpx.head(url, timeout=REACH_TIMEOUT_S)
    except (httpx.HTTPError, httpx.InvalidURL):
        return False
    return True
