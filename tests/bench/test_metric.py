"""prepare.py's metric and data path: bpb on a hand-computed case, token_bytes, BOS-aligned packing."""

from __future__ import annotations

import math
import os
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken
import torch

from bench.sources.cli import load_prepare_module

SPECIALS = [f"<|reserved_{i}|>" for i in range(4)]


def _prepare(tmp_path, monkeypatch, task: str):
    """A fresh prepare.py module whose constants come from a profile with this [task] table."""
    profile = tmp_path / "profile.toml"
    profile.write_text(f'name = "test"\n[task]\n{task}\n[data]\nsource = "corpus"\n')
    monkeypatch.setenv("ARBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ARBENCH_TEST_DIR", str(tmp_path / "heldout"))
    return load_prepare_module(str(profile), "corpus")


def _write_shard(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), path)


def test_prepare_module_takes_the_given_profile_and_leaves_the_environment(monkeypatch):
    monkeypatch.delenv("ARBENCH_PROFILE", raising=False)
    monkeypatch.setenv("ARBENCH_SOURCE", "climbmix")
    prep = load_prepare_module("cpu-tiny", "corpus")
    assert (prep.MAX_SEQ_LEN, prep.VOCAB_SIZE, prep.SOURCE) == (256, 1024, "corpus")
    assert "ARBENCH_PROFILE" not in os.environ and os.environ["ARBENCH_SOURCE"] == "climbmix"


class TableLoss(torch.nn.Module):
    """A stand-in model whose per-token loss depends only on the target token."""

    def __init__(self, losses: torch.Tensor):
        super().__init__()
        self.losses = torch.nn.Parameter(losses, requires_grad=False)

    def forward(self, x, y, reduction="none"):
        return self.losses[y]


def test_bpb_on_a_hand_computed_case(tmp_path, monkeypatch):
    # byte-level ranks plus one merge "ab"; vocab = 256 bytes + "ab" + 4 specials
    prep = _prepare(tmp_path, monkeypatch, "max_seq_len = 8\ntime_budget = 1\neval_tokens = 16\nvocab_size = 261")
    ranks = {bytes([i]): i for i in range(256)} | {b"ab": 256}
    enc = tiktoken.Encoding(name="test", pat_str=prep.SPLIT_PATTERN, mergeable_ranks=ranks,
                            special_tokens={name: 257 + i for i, name in enumerate(SPECIALS)})
    tokenizer_dir = tmp_path / "data" / "tokenizer-261"
    tokenizer_dir.mkdir(parents=True)
    (tokenizer_dir / "tokenizer.pkl").write_bytes(pickle.dumps(enc))
    torch.save(torch.tensor([1] * 256 + [2] + [0] * 4, dtype=torch.int32), tokenizer_dir / "token_bytes.pt")
    _write_shard(tmp_path / "data" / "val" / "shard_00000.parquet", ["aba"] * 50)
    tokenizer = prep.Tokenizer.from_directory()
    assert tokenizer.encode("aba", prepend=tokenizer.get_bos_token_id()) == [257, 256, 97]

    # rows of T+1 = 9 tokens: [BOS ab a] x 3, so each row's targets are ab a BOS ab a BOS ab a
    losses = torch.zeros(261)
    losses[256], losses[97], losses[257] = 1.0, 0.5, 7.0      # BOS's loss must not count
    # nats over targets with bytes > 0: 3 * 1.0 + 3 * 0.5 = 4.5; bytes: 3 * 2 + 3 * 1 = 9
    expected = 4.5 / (math.log(2) * 9)
    for batch_size in (1, 2):
        assert prep.evaluate_bpb(TableLoss(losses), tokenizer, batch_size, split="val") == pytest.approx(expected)


def test_token_bytes_are_zero_for_special_tokens_only(tmp_path, monkeypatch):
    prep = _prepare(tmp_path, monkeypatch, "max_seq_len = 8\ntime_budget = 1\neval_tokens = 16\nvocab_size = 300")
    text = "The committee said on Tuesday that prices rose 3.5% in the year to March, the fastest rate since 2001. "
    _write_shard(tmp_path / "data" / "train" / "shard_00000.parquet", [text * (1 + i % 5) for i in range(100)])
    prep.train_tokenizer()
    tokenizer = prep.Tokenizer.from_directory()
    token_bytes = prep.get_token_bytes()
    enc = tokenizer.enc
    assert enc.n_vocab == 300 and len(token_bytes) == 300
    special_ids = {enc.encode_single_token(s) for s in SPECIALS}
    assert tokenizer.get_bos_token_id() in special_ids
    for i in range(enc.n_vocab):
        expected = 0 if i in special_ids else len(enc.decode_single_token_bytes(i))
        assert token_bytes[i].item() == expected
    assert (token_bytes[[i for i in range(300) if i not in special_ids]] > 0).all()


def test_packing_rows_start_with_bos_and_hold_only_document_prefixes():
    import bench.prepare as prep

    bos, B, capacity = 0, 4, 64
    docs = {}
    def doc_batches():
        k = 0
        while True:
            batch = []
            for _ in range(16):
                k += 1
                docs[k] = [bos] + [k * 1000 + j for j in range((k * 37) % 90 + 1)]
                batch.append(docs[k])
            yield batch, 1

    used = set()
    rows_seen = 0
    for rows, _ in prep.pack_rows(doc_batches(), B, capacity, buffer_size=32):
        assert rows.shape == (B, capacity)
        for row in rows.tolist():
            assert row[0] == bos
            starts = [i for i, t in enumerate(row) if t == bos] + [capacity]
            for start, end in zip(starts[:-1], starts[1:], strict=True):
                segment = row[start:end]
                k = segment[1] // 1000 if len(segment) > 1 else None
                if k is None:
                    continue      # a lone BOS: a document cropped to its first token
                assert segment == docs[k][:len(segment)], "a segment is a prefix of one document"
                assert k not in used, "a document appears once: no continuation in another row"
                used.add(k)
                if len(segment) < len(docs[k]):
                    assert end == capacity, "only the last segment of a row is cropped"
        rows_seen += 1
        if rows_seen == 20:
            break
    assert len(used) > 20
