"""The LLM gateway's overhead (also printed by `make bench`): the same requests to the scripted model server
directly and through the gateway, on loopback, whole and streamed: latency per request (median and p99, one
request at a time) and requests per second (CONCURRENCY at a time). The client, the gateway and the scripted
server share this host's CPUs, so the figures include their competition. Prints, never asserts; target: under
5 ms added per request.

    .venv/bin/python -m harness.benchmark_gateway [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.gateway.client import Gateway
from harness.gateway.scripted import ScriptedServer
from harness.gateway.usage import GatewayBudget

CONCURRENCY = 16
WARMUP = 20
PROMPT_BYTES = 16_000        # a mid-sized agent request (a real one grows with the conversation)
TURN = {"text": "Let me look at the learning-rate schedule before changing it. " * 4,
        "tool_calls": [{"name": "bash", "arguments": {"command": "grep -n LR train.py"}}],
        "usage": {"input_tokens": 4000, "output_tokens": 120, "cache_read_tokens": 0, "cache_write_tokens": 0}}


@dataclass(frozen=True)
class Figures:
    median_ms: float
    p99_ms: float
    per_second: float


def body(stream: bool) -> bytes:
    prompt = "x" * PROMPT_BYTES
    return json.dumps({"model": "scripted-claude", "max_tokens": 1024, "stream": stream,
                       "messages": [{"role": "user", "content": prompt}]}).encode()


def measure(url: str, token: str, stream: bool, requests: int) -> Figures:
    headers = {"x-api-key": token, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    payload = body(stream)
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        times = []
        for i in range(WARMUP + requests):
            start = time.perf_counter()
            with client.stream("POST", "/v1/messages", content=payload) as response:
                response.read()
                assert response.status_code == 200, response.text
            if i >= WARMUP:
                times.append(time.perf_counter() - start)
    times.sort()
    return Figures(statistics.median(times) * 1e3, times[int(0.99 * (len(times) - 1))] * 1e3,
                   asyncio.run(throughput(url, headers, payload, requests)))


async def throughput(url: str, headers: dict, payload: bytes, requests: int) -> float:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:
        async def worker(n: int) -> None:
            for _ in range(n):
                (await client.post("/v1/messages", content=payload)).raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
        return CONCURRENCY * (requests // CONCURRENCY) / (time.perf_counter() - start)


def report(requests: int = 300) -> None:
    turns = 4 * (WARMUP + 2 * requests)       # direct and through, whole and streamed, latency and throughput
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer.start() as scripted:
        scripted.load({"turns": [TURN] * turns})
        with Gateway.start(Path(tmp) / "state", {"anthropic": scripted.url, "openai": scripted.url}) as gateway:
            grant = gateway.open_session("bench", Path(tmp) / "bench", GatewayBudget())
            print(f"gateway overhead: Anthropic Messages, {PROMPT_BYTES // 1000} kB requests, {requests} each, "
                  f"{os.cpu_count()} CPUs shared by client, gateway and scripted server:")
            for stream in (False, True):
                direct = measure(scripted.url, "unused", stream, requests)
                through = measure(grant.tcp_url, grant.token, stream, requests)
                print(f"  {'streamed' if stream else 'whole':>8}: direct median {direct.median_ms:.2f} ms, p99 "
                      f"{direct.p99_ms:.2f} ms, {direct.per_second:.0f} req/s; through the gateway median "
                      f"{through.median_ms:.2f} ms, p99 {through.p99_ms:.2f} ms, {through.per_second:.0f} req/s; "
                      f"added median {through.median_ms - direct.median_ms:.2f} ms, "
                      f"p99 {through.p99_ms - direct.p99_ms:.2f} ms (target < 5 ms)")
            usage = gateway.close_session("bench")
            print(f"  metered {usage.requests} requests, {usage.tokens:,} tokens, "
                  f"${usage.dollars:.2f} (nominal prices)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.benchmark_gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per case (default 300)")
    report(parser.parse_args(argv).requests)


if __name__ == "__main__":
    main()
