"""gateway-probe: an agent that only calls the LLM gateway, in a loop, with the standard library; it never trains.

It stands where an LLM agent would, for the tests of the gateway's caps and of the sandbox's network, and for dry
runs: with `arbench gateway --scripted FILE` running, export the variables it prints and run

    python -m agents.probe [--api messages|responses|chat] [--model ID] [--requests N] [--interval S]

It reads ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY (messages) or OPENAI_BASE_URL / OPENAI_API_KEY (responses, chat),
prints one line per request (status, tokens) and goes on whatever the answer, until N requests (default: until
killed): stopping it at a cap is the harness's job.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Literal

from agents.base import GatewayAgent, Start

API = Literal["messages", "responses", "chat"]
APIS: tuple[API, ...] = ("messages", "responses", "chat")
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class GatewayProbe(GatewayAgent):
    model: str = "scripted-claude"
    api: API = "messages"
    interval_s: float = 0.05      # pause between requests
    requests: int = 0             # exit (code 0) after this many requests; 0: never
    continued: bool = False       # the harness continues it when it exits early (as it does a CLI agent)

    def __post_init__(self):
        if self.api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, got {self.api!r}")
        if not isinstance(self.interval_s, (int, float)) or self.interval_s < 0:
            raise ValueError(f"interval_s must be a number >= 0, got {self.interval_s!r}")
        if not isinstance(self.requests, int) or self.requests < 0:
            raise ValueError(f"requests must be an integer >= 0, got {self.requests!r}")

    def command(self, start: Start) -> list[str]:
        return ["python", "-m", "agents.probe", "--api", self.api, "--model", self.model,
                "--interval", str(self.interval_s), "--requests", str(self.requests)]

    def continue_command(self, start: Start) -> list[str] | None:
        return self.command(start) if self.continued else None


def request(api: API, model: str, n: int) -> urllib.request.Request:
    prompt = f"probe request {n}: say something"
    if api == "messages":
        url, key = os.environ["ANTHROPIC_BASE_URL"].rstrip("/") + "/v1/messages", os.environ["ANTHROPIC_API_KEY"]
        body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        url = os.environ["OPENAI_BASE_URL"].rstrip("/") + ("/responses" if api == "responses" else "/chat/completions")
        body = {"model": model, "input": prompt} if api == "responses" else \
            {"model": model, "messages": [{"role": "user", "content": prompt}]}
        headers = {"authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"}
    return urllib.request.Request(url, json.dumps(body).encode(), headers | {"content-type": "application/json"})


def call(req: urllib.request.Request) -> str:
    """One exchange, as a line: the status and the usage the answer reports, or the error."""
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as answer:
            return f"{answer.status} usage {json.loads(answer.read()).get('usage')}"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read()[:300].decode(errors='replace')}"
    except (OSError, ValueError) as e:
        return f"failed: {type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=APIS, default="messages")
    parser.add_argument("--model", default="scripted-claude")
    parser.add_argument("--requests", type=int, default=0, help="stop after N requests (default 0: never)")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between requests")
    args = parser.parse_args(argv)
    n = 0
    while not args.requests or n < args.requests:
        n += 1
        print(f"request {n}: {call(request(args.api, args.model, n))}", flush=True)
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
