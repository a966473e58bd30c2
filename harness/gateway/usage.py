"""What the gateway counts and caps: the tokens of one exchange (Tokens), a session's totals (Usage, also its
usage.json) and its caps (GatewayBudget). Plain dataclasses shared by the gateway process, its admin API and the
harness's client; no I/O here.

Tokens are normalised across providers: `input_tokens` is input NOT read from the prompt cache (Anthropic's
input_tokens; OpenAI's input/prompt tokens minus cached_tokens), so that every token is priced exactly once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

SCHEMA_VERSION = 1
StopReason = Literal["dollars", "tokens"]


@dataclass(frozen=True)
class Tokens:
    input_tokens: int = 0           # uncached input
    output_tokens: int = 0          # reasoning tokens included (billed as output)
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0     # Anthropic only: OpenAI neither reports nor bills cache writes

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


@dataclass(frozen=True)
class GatewayBudget:
    """A session's caps; None = no cap. The token cap counts Tokens.total (cache reads and writes included)."""
    dollars: float | None = None
    tokens: int | None = None

    def reached(self, usage: Usage) -> StopReason | None:
        if self.dollars is not None and usage.dollars >= self.dollars:
            return "dollars"
        if self.tokens is not None and usage.tokens >= self.tokens:
            return "tokens"
        return None


@dataclass(frozen=True)
class Usage:
    """A session's totals. `stopped` is set once a cap is reached (every later request is refused);
    `infra_error` once an upstream outage outlasted the gateway's limit (likewise); `estimated` counts the
    exchanges whose provider reported no usage, whose tokens were estimated from their text."""
    requests: int = 0               # exchanges forwarded upstream (a refused request is not one)
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    dollars: float = 0.0
    stopped: StopReason | None = None
    infra_error: str | None = None
    estimated: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def add(self, tokens: Tokens, dollars: float, retries: int, estimated: bool) -> Usage:
        return replace(self, requests=self.requests + 1, retries=self.retries + retries,
                       input_tokens=self.input_tokens + tokens.input_tokens,
                       output_tokens=self.output_tokens + tokens.output_tokens,
                       cache_read_tokens=self.cache_read_tokens + tokens.cache_read_tokens,
                       cache_write_tokens=self.cache_write_tokens + tokens.cache_write_tokens,
                       dollars=self.dollars + dollars, estimated=self.estimated + int(estimated))

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> Usage:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
