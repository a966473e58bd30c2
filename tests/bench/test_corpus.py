"""The offline corpus: pinned by hash, split into disjoint, deterministic train/val/test documents."""

from __future__ import annotations

import shutil

import pytest

from bench.sources.base import DataError, FetchError
from bench.sources.corpus import TEST_INDEX, TRAIN_SHARDS, VAL_INDEX, Corpus, data_directory, read_articles


def test_splits_are_disjoint_deterministic_and_cover_every_article():
    splits = Corpus().split_documents
    assert splits == Corpus().split_documents
    documents = [doc for docs in splits.values() for doc in docs]
    assert len(read_articles()) == 2225
    assert len(documents) == len(set(documents)) == len(set(read_articles().values())) == 2127
    val, test = set(splits[("val", VAL_INDEX)]), set(splits[("test", TEST_INDEX)])
    train = {doc for i in range(TRAIN_SHARDS) for doc in splits[("train", i)]}
    assert val.isdisjoint(test) and val.isdisjoint(train) and test.isdisjoint(train)
    assert 150 < len(val) < 300 and 150 < len(test) < 300
    assert all(doc and doc == doc.strip() for doc in documents)


def test_modified_corpus_files_are_rejected(tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data_directory(), copy)
    assert len(read_articles(copy)) == 2225
    article = next(copy.rglob("*.txt"))
    article.write_text(article.read_text() + " (edited)")
    with pytest.raises(FetchError, match="do not match the pinned sha256"):
        read_articles(copy)


def test_asking_for_more_train_shards_than_exist_is_an_error():
    with pytest.raises(DataError, match=f"corpus has {TRAIN_SHARDS} train shards"):
        Corpus().shards(TRAIN_SHARDS + 1)
