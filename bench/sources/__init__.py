"""Data sources for bench/prepare.py: each writes parquet shards (one string column `text`) for the
train, val and test splits. Registry of name -> "module:Class", imported lazily."""

from __future__ import annotations

import importlib

from bench.sources.base import Source

SOURCES = {
    "climbmix": "bench.sources.climbmix:ClimbMix",
    "corpus": "bench.sources.corpus:Corpus",
    "synthetic": "bench.sources.synthetic:Synthetic",
}


class UnknownSourceError(ValueError):
    """A source name that is not in the registry."""


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise UnknownSourceError(f"unknown source {name!r}; known: {', '.join(sorted(SOURCES))}")
    module_name, class_name = SOURCES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()
