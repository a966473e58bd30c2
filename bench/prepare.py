"""
One-time data preparation and the fixed runtime utilities for autoresearch-bench experiments.
Same role and interface as the original autoresearch prepare.py: constants, data, BPE tokenizer,
dataloader and the evaluation metric; every name the original defines, with the same meaning, so a
train.py written for the original runs unchanged. The agent must not modify this file.

Usage:
    python -m bench.prepare --profile cpu-tiny --source corpus   # prepare data + tokenizer

The constants come from the profile (profile.toml beside this file in a workspace, or
$ARBENCH_PROFILE); data lives under $ARBENCH_CACHE (default ~/.cache/autoresearch-bench).
"""

import os
import math
import pickle
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import torch

from bench.sources import climbmix

# ---------------------------------------------------------------------------
# Constants (fixed, do not modify)
# ---------------------------------------------------------------------------

def _profile_path():
    if os.environ.get("ARBENCH_PROFILE"):
        name = os.environ["ARBENCH_PROFILE"]
        return Path(name) if name.endswith(".toml") else Path(__file__).parent / "profiles" / f"{name}.toml"
    beside = Path(__file__).parent / "profile.toml"
    return beside if beside.exists() else Path(__file__).parent / "profiles" / "h100.toml"

PROFILE = tomllib.loads(_profile_path().read_text())
MAX_SEQ_LEN = PROFILE["task"]["max_seq_len"]      # context length
TIME_BUDGET = PROFILE["task"]["time_budget"]      # training time budget in seconds
EVAL_TOKENS = PROFILE["task"]["eval_tokens"]      # number of tokens for val eval
VOCAB_SIZE = PROFILE["task"]["vocab_size"]        # includes the special tokens

# BPE split pattern (GPT-4 style, with \p{N}{1,2} instead of {1,3})
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""

SPECIAL_TOKENS = [f"<|reserved_{i}|>" for i in range(4)]
BOS_TOKEN = "<|reserved_0|>"

# ---------------------------------------------------------------------------
# Configuration: where data lives
# ---------------------------------------------------------------------------

CACHE_DIR = os.environ.get("ARBENCH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "autoresearch-bench"))
SOURCE = os.environ.get("ARBENCH_SOURCE", PROFILE["data"]["source"])
DATA_DIR = os.environ.get("ARBENCH_DATA_DIR", os.path.join(CACHE_DIR, "data", SOURCE))         # train/ val/ tokenizer-*/
TEST_DIR = os.environ.get("ARBENCH_TEST_DIR", os.path.join(CACHE_DIR, "heldout", SOURCE))      # hidden test split, never given to agents
TOKENIZER_DIR = os.path.join(DATA_DIR, f"tokenizer-{VOCAB_SIZE}")
SPLIT_DIRS = {"train": os.path.join(DATA_DIR, "train"), "val": os.path.join(DATA_DIR, "val"), "test": TEST_DIR}

# The original task's data, climbmix (whatever this profile's source): shards as bench/sources/climbmix.py has them
BASE_URL = climbmix.BASE_URL
MAX_SHARD = climbmix.MAX_SHARD    # the last datashard is shard_06542.parquet
VAL_SHARD = climbmix.VAL_INDEX    # pinned validation shard (= MAX_SHARD); the one before it is our hidden test shard
VAL_FILENAME = f"shard_{VAL_SHARD:05d}.parquet"


def list_parquet_files(split=None):
    """Sorted parquet shard paths of a split ('train', 'val' or 'test'); without one, as the original's:
    every shard of the data directory, train then val."""
    if split is None:
        return list_parquet_files("train") + list_parquet_files("val")
    directory = SPLIT_DIRS[split]
    if not os.path.isdir(directory):
        return []
    return [os.path.join(directory, f) for f in sorted(os.listdir(directory)) if f.endswith(".parquet")]


def default_device():
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")

# ---------------------------------------------------------------------------
# Data download (climbmix, the original's data; `python -m bench.prepare` prepares any source)
# ---------------------------------------------------------------------------

def download_single_shard(index):
    """Download one climbmix shard into its split's directory (retries, resume, checksums). True on success."""
    return _download(climbmix.ClimbMix(), [climbmix.shard(index)])


def download_data(num_shards, download_workers=8):
    """Download training shards + the pinned validation shard (and the hidden test shard)."""
    source = climbmix.ClimbMix(workers=download_workers)
    _download(source, source.shards(min(num_shards, climbmix.TEST_INDEX)))   # train shards end before the test shard


def _download(source, shards):
    """Fetch shards into DATA_DIR and TEST_DIR with bench/sources (verified, recorded in the manifest)."""
    from rich.progress import Progress
    from bench.sources.base import DataError, Layout, prepare_shards
    try:
        with Progress(transient=True) as progress:
            report = prepare_shards(source, Layout(Path(DATA_DIR), Path(TEST_DIR)), shards, progress)
    except DataError as e:
        print(f"Data: {e}")
        return False
    print(f"Data: {len(report.fetched)} shards downloaded, {len(report.verified)} already present, at {DATA_DIR}")
    return True

# ---------------------------------------------------------------------------
# Tokenizer training
# ---------------------------------------------------------------------------

def text_iterator(max_chars=1_000_000_000, doc_cap=10_000):
    """Yield documents from the training split."""
    nchars = 0
    for filepath in list_parquet_files("train"):
        pf = pq.ParquetFile(filepath)
        for rg_idx in range(pf.num_row_groups):
            for text in pf.read_row_group(rg_idx, columns=["text"]).column("text").to_pylist():
                doc = text[:doc_cap]
                nchars += len(doc)
                yield doc
                if nchars >= max_chars:
                    return


class TokenizerError(ValueError):
    """The train split cannot give a tokenizer of the profile's vocabulary size."""


def train_tokenizer(tokenizer_dir=TOKENIZER_DIR, vocab_size=VOCAB_SIZE):
    """Train a BPE tokenizer with rustbpe on the train split; save it as a tiktoken encoding."""
    import rustbpe
    import tiktoken

    tokenizer_pkl = os.path.join(tokenizer_dir, "tokenizer.pkl")
    token_bytes_path = os.path.join(tokenizer_dir, "token_bytes.pt")
    if os.path.exists(tokenizer_pkl) and os.path.exists(token_bytes_path):
        print(f"Tokenizer: already trained at {tokenizer_dir}")
        return
    os.makedirs(tokenizer_dir, exist_ok=True)

    tokenizer = rustbpe.Tokenizer()
    tokenizer.train_from_iterator(text_iterator(), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    mergeable_ranks = {bytes(k): v for k, v in tokenizer.get_mergeable_ranks()}
    if len(mergeable_ranks) + len(SPECIAL_TOKENS) != vocab_size:
        # a smaller vocabulary would change the model the profile defines: refuse rather than drift
        raise TokenizerError(f"BPE found only {len(mergeable_ranks) + len(SPECIAL_TOKENS)} tokens in the train split, "
                         f"the profile needs vocab_size={vocab_size}: prepare more training data")
    special_tokens = {name: len(mergeable_ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
    enc = tiktoken.Encoding(name="rustbpe", pat_str=tokenizer.get_pattern(),
                            mergeable_ranks=mergeable_ranks, special_tokens=special_tokens)

    # token_bytes: UTF-8 length of each token, 0 for special tokens (they are not scored)
    special_ids = set(special_tokens.values())
    token_bytes = [0 if i in special_ids else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)]

    test = "Hello world! Numbers: 123. Unicode: 你好"
    assert enc.decode(enc.encode_ordinary(test)) == test, "tokenizer roundtrip failed"

    # write, then rename: a kill never leaves a half-written tokenizer
    for path, write in ((token_bytes_path, lambda f: torch.save(torch.tensor(token_bytes, dtype=torch.int32), f)),
                        (tokenizer_pkl, lambda f: pickle.dump(enc, f))):
        with open(path + ".tmp", "wb") as f:
            write(f)
        os.replace(path + ".tmp", path)
    print(f"Tokenizer: trained (vocab_size={enc.n_vocab}), saved to {tokenizer_dir}")

# ---------------------------------------------------------------------------
# Runtime utilities (imported by train.py)
# ---------------------------------------------------------------------------

class Tokenizer:
    """Minimal tokenizer wrapper. Training is handled above."""

    def __init__(self, enc):
        self.enc = enc
        self.bos_token_id = enc.encode_single_token(BOS_TOKEN)

    @classmethod
    def from_directory(cls, tokenizer_dir=TOKENIZER_DIR):
        with open(os.path.join(tokenizer_dir, "tokenizer.pkl"), "rb") as f:
            enc = pickle.load(f)
        return cls(enc)

    def get_vocab_size(self):
        return self.enc.n_vocab

    def get_bos_token_id(self):
        return self.bos_token_id

    def encode(self, text, prepend=None, num_threads=8):
        if prepend is not None:
            prepend_id = prepend if isinstance(prepend, int) else self.enc.encode_single_token(prepend)
        if isinstance(text, str):
            ids = self.enc.encode_ordinary(text)
            if prepend is not None:
                ids.insert(0, prepend_id)
        elif isinstance(text, list):
            ids = self.enc.encode_ordinary_batch(text, num_threads=num_threads)
            if prepend is not None:
                for row in ids:
                    row.insert(0, prepend_id)
        else:
            raise ValueError(f"Invalid input type: {type(text)}")
        return ids

    def decode(self, ids):
        return self.enc.decode(ids)


def get_token_bytes(device="cpu", tokenizer_dir=TOKENIZER_DIR):
    with open(os.path.join(tokenizer_dir, "token_bytes.pt"), "rb") as f:
        return torch.load(f, map_location=device)


def _document_batches(split, tokenizer_batch_size=128):
    """Infinite iterator over document batches of a split."""
    parquet_paths = list_parquet_files(split)
    assert parquet_paths, f"No parquet files for split {split!r} in {SPLIT_DIRS[split]}. Run prepare first."
    epoch = 1
    while True:
        for filepath in parquet_paths:
            pf = pq.ParquetFile(filepath)
            for rg_idx in range(pf.num_row_groups):
                batch = pf.read_row_group(rg_idx, columns=["text"]).column("text").to_pylist()
                for i in range(0, len(batch), tokenizer_batch_size):
                    yield batch[i:i + tokenizer_batch_size], epoch
        epoch += 1


def pack_rows(doc_lists, B, row_capacity, buffer_size=1000):
    """
    BOS-aligned best-fit packing: yields (B, row_capacity) tensors of token ids.
    Every row starts with a document's BOS. The largest buffered document that fits goes next;
    when none fits, the shortest is cropped to fill the row exactly. 100% utilization, no padding.
    doc_lists yields (list of token lists, epoch).
    """
    doc_buffer = []
    epoch = 1
    row_buffer = torch.empty((B, row_capacity), dtype=torch.long)
    while True:
        for row_idx in range(B):
            pos = 0
            while pos < row_capacity:
                while len(doc_buffer) < buffer_size:
                    token_lists, epoch = next(doc_lists)
                    doc_buffer.extend(token_lists)
                remaining = row_capacity - pos
                best_idx, best_len = -1, 0
                for i, doc in enumerate(doc_buffer):
                    if best_len < len(doc) <= remaining:
                        best_idx, best_len = i, len(doc)
                if best_idx >= 0:
                    doc = doc_buffer.pop(best_idx)
                    row_buffer[row_idx, pos:pos + len(doc)] = torch.tensor(doc, dtype=torch.long)
                    pos += len(doc)
                else:
                    shortest_idx = min(range(len(doc_buffer)), key=lambda i: len(doc_buffer[i]))
                    doc = doc_buffer.pop(shortest_idx)
                    row_buffer[row_idx, pos:pos + remaining] = torch.tensor(doc[:remaining], dtype=torch.long)
                    pos += remaining
        yield row_buffer.clone(), epoch


def make_dataloader(tokenizer, B, T, split, buffer_size=1000, device=None):
    """
    BOS-aligned dataloader with best-fit packing (see pack_rows).
    Yields (inputs, targets, epoch) with inputs and targets of shape (B, T) on the device.
    """
    assert split in ("train", "val", "test")
    device = torch.device(device) if device is not None else default_device()
    bos_token = tokenizer.get_bos_token_id()
    token_lists = ((tokenizer.encode(docs, prepend=bos_token), epoch) for docs, epoch in _document_batches(split))
    for rows, epoch in pack_rows(token_lists, B, T + 1, buffer_size):
        if device.type == "cuda":
            rows = rows.pin_memory().to(device, non_blocking=True)
        else:
            rows = rows.to(device)
        yield rows[:, :-1].contiguous(), rows[:, 1:].contiguous(), epoch  # contiguous like the original's buffers

# ---------------------------------------------------------------------------
# Evaluation (DO NOT CHANGE — this is the fixed metric)
# ---------------------------------------------------------------------------

@torch.no_grad()
def evaluate_bpb(model, tokenizer, batch_size, split="val"):
    """
    Bits per byte (BPB): vocab size-independent evaluation metric.
    Sums per-token cross-entropy (in nats), sums target byte lengths,
    then converts nats/byte to bits/byte. Special tokens (byte length 0)
    are excluded from both sums.
    Uses fixed MAX_SEQ_LEN so results are comparable across configs.
    """
    device = next(model.parameters()).device
    token_bytes = get_token_bytes(device=device)
    loader = make_dataloader(tokenizer, batch_size, MAX_SEQ_LEN, split, device=device)
    steps = EVAL_TOKENS // (batch_size * MAX_SEQ_LEN)
    total_nats = 0.0
    total_bytes = 0
    for _ in range(steps):
        x, y, _ = next(loader)
        loss_flat = model(x, y, reduction='none').view(-1)
        nbytes = token_bytes[y.reshape(-1)]
        mask = nbytes > 0
        total_nats += (loss_flat * mask).sum().item()
        total_bytes += nbytes.sum().item()
    return total_nats / (math.log(2) * total_bytes)

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

if __name__ == "__main__":
    from bench.sources.cli import main
    main()
