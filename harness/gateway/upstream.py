"""The gateway's upstream side: the provider keys (read only by the gateway process, from its environment or a
key file; never logged, and redacted from anything it writes or returns), one pooled httpx client, and the retry
loop. 408 / 409 / 429 / 5xx answers, timeouts and connection errors are retried with exponential backoff
honouring retry-after (seconds or an HTTP date), each failed attempt kept for the transcript, until the failures
of one request outlast RetryPolicy.outage_limit_s: then Outage. A stream that has begun is never retried."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from harness.gateway.wire import Provider

KEY_ENV: dict[Provider, str] = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
DEFAULT_UPSTREAMS: dict[Provider, str] = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com"}
RETRIED_STATUSES = frozenset({408, 409, 429})    # and every 5xx (Anthropic's 529 overloaded included)
NOT_FORWARDED = frozenset({"host", "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
                           "trailer", "transfer-encoding", "upgrade", "content-length", "expect", "accept-encoding",
                           "x-api-key", "authorization"})
REDACTED = b"[redacted]"
ERROR_EXCERPT = 500          # characters of an upstream error body kept per failed attempt


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 1.0              # first backoff, doubled at each retry (jittered down to half)
    max_s: float = 60.0              # longest backoff; a retry-after may ask for longer
    outage_limit_s: float = 600.0    # failing this long since a request's first failed attempt: infra_error
    timeout_s: float = 600.0         # upstream connect / read timeout (a stream may pause while a model thinks)

    def argv(self) -> list[str]:
        return ["--retry-base", str(self.base_s), "--retry-max", str(self.max_s),
                "--outage-limit", str(self.outage_limit_s), "--upstream-timeout", str(self.timeout_s)]


@dataclass(frozen=True)
class Attempt:
    """A failed attempt, as the transcript records it."""
    status: int | None      # the upstream's answer; None when there was none (timeout, connection error)
    error: str              # the exception, or the start of the error body
    wait_s: float           # backoff before the next attempt (0 for the last)


class Outage(Exception):
    """One request's upstream failed for longer than the outage limit."""


def load_keys(keys_file: Path | None, environ: Mapping[str, str]) -> dict[Provider, str]:
    """Provider keys from a key file of NAME=value lines (dotenv style; its values win) or the environment."""
    values = dict(environ)
    if keys_file is not None:
        for line in keys_file.read_text().splitlines():
            name, sep, value = line.strip().removeprefix("export ").partition("=")
            if sep and not name.startswith("#"):
                values[name.strip()] = value.strip().strip("'\"")
    return {provider: values[var] for provider, var in KEY_ENV.items() if values.get(var)}


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait an answer asks for: retry-after-ms (OpenAI), retry-after in seconds or as an HTTP date."""
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        if value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def is_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


class Upstream:
    def __init__(self, bases: Mapping[str, str], keys: dict[Provider, str], policy: RetryPolicy):
        self.bases = {**DEFAULT_UPSTREAMS, **{k: v.rstrip("/") for k, v in bases.items()}}
        self.keys, self.policy = keys, policy
        self._secrets = [k.encode() for k in keys.values()]
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(policy.timeout_s),
                                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    def redact(self, data: bytes) -> bytes:
        for secret in self._secrets:
            if secret in data:
                data = data.replace(secret, REDACTED)
        return data

    def request(self, provider: Provider, method: str, path: str, headers: Mapping[str, str],
                body: bytes) -> httpx.Request:
        """The agent's request as it goes upstream: its headers and body, but its session token replaced by the key."""
        sent = {k: v for k, v in headers.items() if k.lower() not in NOT_FORWARDED}
        key = self.keys.get(provider)
        if key and provider == "anthropic":
            sent["x-api-key"] = key
        elif key:
            sent["authorization"] = f"Bearer {key}"
        return self.client.build_request(method, self.bases[provider] + path, headers=sent, content=body or None)

    async def send(self, request: httpx.Request, attempts: list[Attempt]) -> httpx.Response:
        """The first answer that is not retried: a stream comes back unread (the caller closes it), any other
        answer read whole. Each failed attempt is appended to attempts; raises Outage."""
        first_failure: float | None = None
        while True:
            started = time.monotonic()
            response = None
            try:
                response = await self.client.send(request, stream=True)
                retried = response.status_code in RETRIED_STATUSES or response.status_code >= 500
                if not retried and is_stream(response):
                    return response
                await response.aread()                  # read whole, and closed
                if not retried:
                    return response
                status, hint = response.status_code, retry_after_s(response.headers)
                error = self.redact(response.content[:ERROR_EXCERPT]).decode(errors="replace")
            except httpx.TransportError as e:       # timeouts, refused or reset connections, protocol errors
                if response is not None:
                    await response.aclose()
                status, hint, error = None, None, f"{type(e).__name__}: {e}"
            first_failure = first_failure if first_failure is not None else started
            wait = hint if hint is not None else self.backoff(len(attempts))
            failing = time.monotonic() - first_failure
            if failing + wait > self.policy.outage_limit_s:
                attempts.append(Attempt(status, error, 0.0))
                raise Outage(f"upstream failing for {failing:.1f}s over {len(attempts)} attempts, past the "
                             f"{self.policy.outage_limit_s:g}s outage limit; last: {status or error}")
            attempts.append(Attempt(status, error, wait))
            await asyncio.sleep(wait)

    def backoff(self, retries: int) -> float:
        return min(self.policy.max_s, self.policy.base_s * 2 ** retries) * random.uniform(0.5, 1.0)

    async def aclose(self) -> None:
        await self.client.aclose()
