"""`climbmix`: the original task's data, parquet shards of karpathy/climbmix-400b-shuffle.

shard_00000 ... shard_06542; the last is the pinned val shard (as in the original), the one before it
is our hidden test shard. Downloads stream to `<shard>.tmp` and are renamed only once complete and
verified: size and sha256 against what the server announces (Hugging Face sends the LFS sha256 as
X-Linked-Etag), and the file must open as parquet with a `text` column. An interrupted download
resumes from its .tmp with an HTTP Range request. $ARBENCH_CLIMBMIX_URL overrides the base URL.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
from rich.progress import Progress

from bench.sources.base import DataError, FetchError, Shard, Source, sha256_file

BASE_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
MAX_SHARD = 6542                                  # the last shard is shard_06542.parquet
VAL_INDEX, TEST_INDEX = MAX_SHARD, MAX_SHARD - 1  # pinned val shard (as the original); hidden test shard


@dataclass(frozen=True)
class Expected:
    """What the server announces about the complete file (either may be unknown)."""
    sha256: str | None
    size: int | None


def shard(index: int) -> Shard:
    """Shard `index` of climbmix, in the split this benchmark gives it."""
    return Shard("val" if index == VAL_INDEX else "test" if index == TEST_INDEX else "train", index)


class ClimbMix(Source):
    name = "climbmix"

    def __init__(self, base_url: str | None = None, attempts: int = 5, backoff: float = 2.0,
                 workers: int = 8, timeout: float = 30.0):
        self.base_url = (base_url or os.environ.get("ARBENCH_CLIMBMIX_URL") or BASE_URL).rstrip("/")
        self.attempts, self.backoff, self.workers, self.timeout = attempts, backoff, workers, timeout

    def shards(self, train_shards: int) -> list[Shard]:
        if train_shards > TEST_INDEX:
            raise DataError(f"climbmix has {TEST_INDEX} train shards; {train_shards} were asked for")
        return [Shard("train", i) for i in range(train_shards)] + [Shard("val", VAL_INDEX), Shard("test", TEST_INDEX)]

    def metadata(self) -> dict[str, Any]:
        return {"dataset": "karpathy/climbmix-400b-shuffle", "val_shard": VAL_INDEX, "test_shard": TEST_INDEX}

    def fetch_many(self, todo: list[tuple[Shard, Path]], progress: Progress) -> Iterator[tuple[Shard, str | None]]:
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(todo))))
        try:
            futures = {pool.submit(self.fetch, shard, dest, progress): shard for shard, dest in todo}
            for future in as_completed(futures):
                error = future.exception()
                if error is not None and not isinstance(error, FetchError):
                    raise error
                yield futures[future], None if error is None else str(error)
        finally:
            pool.shutdown(cancel_futures=True)    # on Ctrl-C, start no new downloads

    def fetch(self, shard: Shard, dest: Path, progress: Progress) -> None:
        """Download with retries and exponential backoff; raise FetchError once attempts are spent."""
        url = f"{self.base_url}/{shard.filename}"
        for attempt in range(1, self.attempts + 1):
            try:
                self._download(url, dest, progress)
                return
            except (httpx.HTTPError, FetchError, OSError) as e:
                if _permanent(e) or attempt == self.attempts:
                    raise FetchError(f"{_describe(e)} (attempt {attempt}/{self.attempts}, {url})") from None
                delay = self.backoff * 2 ** (attempt - 1)
                progress.console.print(f"  {shard.filename}: attempt {attempt}/{self.attempts} failed: "
                                       f"{_describe(e)}; retrying in {delay:g}s")
                time.sleep(delay)

    def _download(self, url: str, dest: Path, progress: Progress) -> None:
        tmp = dest.with_name(dest.name + ".tmp")
        offset = tmp.stat().st_size if tmp.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with httpx.Client(follow_redirects=True, timeout=self.timeout) as client:
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416:      # the partial file is already as long as the whole one
                    tmp.unlink()
                    raise FetchError("stale partial download discarded")
                response.raise_for_status()
                expected = _expected(response)
                resumed = response.status_code == 206
                task = progress.add_task(f"  {dest.name}", total=expected.size,
                                         completed=offset if resumed else 0)
                try:
                    with open(tmp, "ab" if resumed else "wb") as f:
                        for chunk in response.iter_bytes():
                            f.write(chunk)
                            progress.advance(task, len(chunk))
                finally:
                    progress.remove_task(task)
        _verify(tmp, expected)
        os.replace(tmp, dest)


def _expected(response: httpx.Response) -> Expected:
    sha, size = None, None
    for r in [*response.history, response]:
        for name in ("x-linked-etag", "etag"):
            tag = r.headers.get(name, "").removeprefix("W/").strip('"')
            if sha is None and re.fullmatch(r"[0-9a-f]{64}", tag):
                sha = tag
        if size is None and r.headers.get("x-linked-size", "").isdigit():
            size = int(r.headers["x-linked-size"])
    if size is None and response.status_code == 206:
        total = response.headers.get("content-range", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else None
    if size is None and response.status_code == 200 and response.headers.get("content-length", "").isdigit():
        size = int(response.headers["content-length"])
    return Expected(sha, size)


def _verify(tmp: Path, expected: Expected) -> None:
    """Check a complete download; a short file stays for resuming, a wrong one is deleted."""
    size = tmp.stat().st_size
    if expected.size is not None and size < expected.size:
        raise FetchError(f"truncated download ({size} of {expected.size} bytes)")
    problem = None
    if expected.size is not None and size > expected.size:
        problem = f"download larger than announced ({size} > {expected.size} bytes)"
    elif expected.sha256 is not None and (digest := sha256_file(tmp)) != expected.sha256:
        problem = f"checksum mismatch (expected sha256 {expected.sha256[:12]}…, got {digest[:12]}…)"
    else:
        problem = _parquet_problem(tmp)
    if problem:
        tmp.unlink()
        raise FetchError(problem)


def _parquet_problem(path: Path) -> str | None:
    try:
        if "text" not in pq.ParquetFile(path).schema_arrow.names:
            return "parquet file has no `text` column"
    except Exception as e:  # pyarrow raises several types for a damaged file
        return f"not a readable parquet file ({e})"
    return None


def _permanent(error: Exception) -> bool:
    """4xx answers other than timeouts and rate limits will not change on a retry."""
    return (isinstance(error, httpx.HTTPStatusError) and 400 <= error.response.status_code < 500
            and error.response.status_code not in (408, 429))


def _describe(error: Exception) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    return str(error) or type(error).__name__
