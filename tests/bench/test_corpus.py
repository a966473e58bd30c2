"""The offline corpus: pinned by hash, split into disjoint, deterministic train/val/test documents."""

from __future__ import annotations

import shutil

import pytest

from bench.sources.base import DataError, FetchError
from bench.sources.corpus import (TEST_INDEX, TRAIN_SHARDS, VAL_INDEX, Corpus, data_directory, paragraphs,
                                  read_articles)


def test_splits_are_disjoint_deterministic_and_cover_every_article():
    splits = Corpus().split_documents
    assert splits == Corpus().split_documents
    documents = [doc for docs in splits.values() for doc in docs]
    articles = set(read_articles().values())
    assert len(read_articles()) == 2225 and len(articles) == 2127
    assert set(documents) == {p for article in articles for p in paragraphs(article)}
    val, test = splits[("val", VAL_INDEX)], splits[("test", TEST_INDEX)]
    train = {doc for i in range(TRAIN_SHARDS) for doc in splits[("train", i)]}
    assert len(val) == len(set(val)) and len(test) == len(set(test))
    assert set(val).isdisjoint(test) and set(val).isdisjoint(train) and set(test).isdisjoint(train)
    # more documents than the dataloader's 1000-document buffer: evaluation never wraps around
    assert len(splits[("val", VAL_INDEX)]) > 2000 and len(splits[("test", TEST_INDEX)]) > 2000
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


def test_cpu_tiny_evaluation_never_wraps_around_the_val_split(corpus_data):
    """The eval rows come from the first epoch of the split: no document is scored twice."""
    import itertools

    import pyarrow.parquet as pq

    from bench.prepare import BOS_TOKEN, Tokenizer, pack_rows
    from bench.profile import load_profile

    task = load_profile("cpu-tiny").task
    tokenizer = Tokenizer.from_directory(str(corpus_data.tokenizer_dir))
    bos = tokenizer.enc.encode_single_token(BOS_TOKEN)
    docs = [text for path in sorted((corpus_data.data_dir / "val").glob("*.parquet"))
            for text in pq.read_table(path)["text"].to_pylist()]

    def batches():
        for epoch in itertools.count(1):
            for i in range(0, len(docs), 128):
                yield tokenizer.encode(docs[i:i + 128], prepend=bos), epoch

    rows = task["eval_tokens"] // task["max_seq_len"]
    packed = pack_rows(batches(), rows, task["max_seq_len"] + 1)
    block, epoch = next(packed)
    assert epoch == 1
    assert len({tuple(r) for r in block.tolist()}) == rows
