"""The synthetic source: its entropy formula is right and its text follows its generator."""

from __future__ import annotations

import numpy as np
import pytest

from bench.sources.base import Shard
from bench.sources.synthetic import MarkovChain, Synthetic


def _binary_entropy(p: float) -> float:
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def test_entropy_rate_of_a_two_state_chain_matches_the_closed_form():
    p, q = 0.1, 0.4
    chain = MarkovChain("ab", 1, np.array([[1 - p, p], [q, 1 - q]]))
    pi = np.array([q, p]) / (p + q)
    assert chain.stationary == pytest.approx(pi)
    assert chain.entropy_rate_bits() == pytest.approx(pi[0] * _binary_entropy(p) + pi[1] * _binary_entropy(q))
    assert chain.initial_entropy_bits() == pytest.approx(_binary_entropy(pi[0]))


def test_generated_text_has_the_entropy_the_manifest_records():
    source = Synthetic()
    chain, rate = source.chain, source.metadata()["entropy_bits_per_byte"]
    docs = source.documents(Shard("train", 0)) + source.documents(Shard("train", 1))
    assert all(len(d.encode("utf-8")) == len(d) for d in docs), "one byte per symbol"
    index = {c: i for i, c in enumerate(chain.alphabet)}
    states, nexts = [], []
    for doc in docs:
        ids = np.array([index[c] for c in doc])
        states.append(ids[:-2] * len(chain.alphabet) + ids[1:-1])
        nexts.append(ids[2:])
    states, nexts = np.concatenate(states), np.concatenate(nexts)
    n = len(nexts)
    assert n > 2_000_000

    # mean surprisal under the true chain: an unbiased estimate of the entropy rate
    surprisal = -np.log2(chain.transitions[states, nexts])
    assert abs(surprisal.mean() - rate) < 4 * surprisal.std() / np.sqrt(n)

    # plug-in conditional entropy of the text itself (biased low by about cells / (2 n ln 2))
    counts = np.zeros_like(chain.transitions)
    np.add.at(counts, (states, nexts), 1)
    joint = counts[counts > 0] / n
    state_freq = counts.sum(axis=1)
    conditional = -(joint * np.log2(counts[counts > 0] / np.repeat(state_freq, (counts > 0).sum(axis=1)))).sum()
    assert conditional == pytest.approx(rate, abs=0.02)
    assert state_freq / n == pytest.approx(chain.stationary, abs=2e-3)


def test_best_val_bpb_is_the_rate_plus_each_documents_start():
    meta = Synthetic().metadata()
    rate, best = meta["entropy_bits_per_byte"], meta["best_val_bpb"]
    assert 2.0 < rate < 3.0
    assert rate < best < rate + meta["initial_state_entropy_bits"] / meta["doc_bytes"][0]


def test_shards_are_deterministic_and_distinct():
    a, b = Synthetic(), Synthetic()
    assert a.documents(Shard("val", 99999)) == b.documents(Shard("val", 99999))
    lengths = [len(d) for d in a.documents(Shard("train", 0))]
    assert min(lengths) >= 256 and max(lengths) < 2048 and len(set(lengths)) > 100
    assert set(a.documents(Shard("val", 99999))).isdisjoint(a.documents(Shard("test", 99998)))
