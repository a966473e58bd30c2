"""The gateway's dated price table (prices.toml next to this file, or another given with --prices): USD per
million tokens per model. `price_of(model)` raises UnknownModel, so that a run configured with a model the table
does not price fails when it is configured, not after a night metered at $0."""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from harness.gateway.usage import Tokens

PRICES_FILE = Path(__file__).with_name("prices.toml")
DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")   # claude-...-20251001, gpt-5-2025-08-07


class UnknownModel(ValueError):
    """A model the price table does not list; the message names the table and its models."""


@dataclass(frozen=True)
class Price:
    input: float          # USD per million tokens, each
    output: float
    cache_read: float
    cache_write: float

    def dollars(self, t: Tokens) -> float:
        return (t.input_tokens * self.input + t.output_tokens * self.output + t.cache_read_tokens * self.cache_read
                + t.cache_write_tokens * self.cache_write) / 1e6


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    models: dict[str, Price]
    path: Path

    def price_of(self, model: str) -> Price:
        for name in (model, DATE_SUFFIX.sub("", model)):
            if name in self.models:
                return self.models[name]
        raise UnknownModel(f"model {model!r} has no price in {self.path} (as of {self.as_of}); "
                           f"priced: {', '.join(sorted(self.models))}")


@functools.cache
def load_prices(path: Path = PRICES_FILE) -> PriceTable:
    data = tomllib.loads(path.read_text())
    keys = [f.name for f in fields(Price)]
    models = {}
    for name, row in data.get("models", {}).items():
        if sorted(row) != sorted(keys) or not all(isinstance(row[k], (int, float)) and row[k] >= 0 for k in keys):
            raise ValueError(f"{path}: model {name!r} needs exactly {', '.join(keys)} (USD per million tokens, >= 0)")
        models[name] = Price(**{k: float(row[k]) for k in keys})
    if "as_of" not in data or not models:
        raise ValueError(f"{path}: a price table needs as_of = \"YYYY-MM-DD\" and at least one [models.ID]")
    return PriceTable(str(data["as_of"]), models, path)


def price_of(model: str, path: Path = PRICES_FILE) -> Price:
    return load_prices(path).price_of(model)
