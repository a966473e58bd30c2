"""`synthetic`: text from a known Markov chain, so the best possible val_bpb is known exactly.

An order-2 Markov chain over 28 ASCII symbols (one byte each in UTF-8, so bits per byte = bits per
symbol). Each document starts in a state drawn from the stationary distribution, so every document
is a stationary sample. The entropy rate H = sum_s pi(s) * H(P(.|s)) is the best bits per byte any
model can reach on long documents; the manifest records it as `entropy_bits_per_byte`, and
`best_val_bpb` adds the cost of each val document's first symbols (entropy of the stationary state).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from bench.sources.base import Shard, Source, write_shard

ALPHABET = "abcdefghijklmnopqrstuvwxyz ."
ORDER = 2
SEED = 20260401
DIRICHLET_ALPHA = 0.1       # sparse rows: a few likely successors per state, like letters in words
FLOOR = 1e-3                # every transition possible, so the chain is ergodic
DOCS_PER_SHARD = 1000
DOC_BYTES = (256, 2048)     # document lengths, uniform in [min, max)
VAL_INDEX, TEST_INDEX = 99999, 99998
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class MarkovChain:
    """Order-k chain: transitions[s, c] = P(next symbol c | last k symbols encoded as s in base |alphabet|)."""

    alphabet: str
    order: int
    transitions: np.ndarray

    @classmethod
    def random(cls, alphabet: str, order: int, seed: int, alpha: float, floor: float) -> MarkovChain:
        rng = np.random.default_rng(seed)
        n = len(alphabet)
        rows = rng.dirichlet(np.full(n, alpha), size=n ** order) + floor
        return cls(alphabet, order, rows / rows.sum(axis=1, keepdims=True))

    @property
    def n_states(self) -> int:
        return self.transitions.shape[0]

    def successor_states(self) -> np.ndarray:
        """successor_states()[s, c]: the state after emitting c in state s."""
        n = len(self.alphabet)
        return (np.arange(self.n_states)[:, None] * n + np.arange(n)[None, :]) % self.n_states

    @cached_property
    def stationary(self) -> np.ndarray:
        matrix = np.zeros((self.n_states, self.n_states))
        np.add.at(matrix, (np.repeat(np.arange(self.n_states), len(self.alphabet)), self.successor_states().ravel()),
                  self.transitions.ravel())
        # pi (T - I) = 0 with one of its (linearly dependent) equations replaced by sum(pi) = 1
        system = matrix.T - np.eye(self.n_states)
        system[-1] = 1.0
        rhs = np.zeros(self.n_states)
        rhs[-1] = 1.0
        return np.linalg.solve(system, rhs)

    def entropy_rate_bits(self) -> float:
        return float(self.stationary @ _entropy_bits(self.transitions))

    def initial_entropy_bits(self) -> float:
        """Entropy of the first `order` symbols of a document (a stationary state)."""
        return float(_entropy_bits(self.stationary[None, :])[0])

    def sample(self, rng: np.random.Generator, lengths: np.ndarray) -> list[str]:
        """Documents of the given lengths (>= order), each starting in a stationary state."""
        n, docs = len(self.alphabet), len(lengths)
        symbols = np.zeros((docs, int(lengths.max())), dtype=np.uint8)
        state = rng.choice(self.n_states, size=docs, p=self.stationary / self.stationary.sum())
        for k in range(self.order):
            symbols[:, k] = (state // n ** (self.order - 1 - k)) % n
        cumulative, successors = np.cumsum(self.transitions, axis=1), self.successor_states()
        for t in range(self.order, symbols.shape[1]):
            u = rng.random(docs)[:, None]
            nxt = np.minimum((cumulative[state] < u).sum(axis=1), n - 1)
            symbols[:, t] = nxt
            state = successors[state, nxt]
        table = np.frombuffer(self.alphabet.encode("ascii"), dtype=np.uint8)
        return [table[row[:length]].tobytes().decode("ascii") for row, length in zip(symbols, lengths, strict=True)]


def _entropy_bits(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(probabilities, 0.0, 1.0)
    return -(p * np.log2(np.where(p > 0, p, 1.0))).sum(axis=1)


class Synthetic(Source):
    name = "synthetic"

    @cached_property
    def chain(self) -> MarkovChain:
        return MarkovChain.random(ALPHABET, ORDER, SEED, DIRICHLET_ALPHA, FLOOR)

    def shards(self, train_shards: int) -> list[Shard]:
        return [Shard("train", i) for i in range(train_shards)] + [Shard("val", VAL_INDEX), Shard("test", TEST_INDEX)]

    def documents(self, shard: Shard) -> list[str]:
        rng = np.random.default_rng([SEED, SPLIT_CODES[shard.split], shard.index])
        return self.chain.sample(rng, rng.integers(*DOC_BYTES, size=DOCS_PER_SHARD))

    def metadata(self) -> dict[str, Any]:
        return self._metadata

    @cached_property
    def _metadata(self) -> dict[str, Any]:
        rate, initial = self.chain.entropy_rate_bits(), self.chain.initial_entropy_bits()
        val_lengths = np.array([len(d) for d in self.documents(Shard("val", VAL_INDEX))])
        best_val = (len(val_lengths) * initial + (val_lengths - ORDER).sum() * rate) / val_lengths.sum()
        return {"generator": f"order-{ORDER} Markov chain", "alphabet": ALPHABET, "seed": SEED,
                "dirichlet_alpha": DIRICHLET_ALPHA, "floor": FLOOR, "docs_per_shard": DOCS_PER_SHARD,
                "doc_bytes": list(DOC_BYTES), "entropy_bits_per_byte": round(rate, 12),
                "initial_state_entropy_bits": round(initial, 12), "best_val_bpb": round(float(best_val), 12)}

    def fetch(self, shard: Shard, dest: Path, progress: Progress) -> None:
        write_shard(dest, self.documents(shard))
