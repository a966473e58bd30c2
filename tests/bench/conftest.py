from __future__ import annotations

import pytest
from shard_server import ShardServer, make_shard


@pytest.fixture
def shard_server():
    """A local stand-in for the climbmix host, serving small shards (train 0-2, test 6541, val 6542)."""
    server = ShardServer()
    for index in (0, 1, 2, 6541, 6542):
        texts = [f"Document {j} of shard {index}: the quick brown fox jumps over the lazy dog. " * (1 + j % 7)
                 for j in range(200)]
        server.files[f"shard_{index:05d}.parquet"] = make_shard(texts)
    server.start()
    yield server
    server.stop()
