"""The scripted model server: Anthropic Messages (count_tokens included), OpenAI Responses and Chat Completions,
streamed or not, and /v1/models, answering model requests with a script's turns in order (harness/gateway/
script.py: text, tool calls, usage numbers, injectable faults). It stands in for the providers behind the gateway
in the tests and in `make bench`, and for dry runs (`arbench gateway --scripted FILE`). Any key is accepted.

It keeps what it received and sent (the last RECORD_LIMIT exchanges): GET /scripted/received returns them, with
request headers; PUT /scripted/script replaces the script (JSON), restarts it and clears that record.

    python -m harness.gateway.scripted [SCRIPT] [--port N]      prints its URL on its first line, serves until killed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import subprocess
import sys
from collections import deque
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from harness.gateway.script import (Fault, Script, Turn, anthropic_events, anthropic_message, chat_chunks,
                                    chat_completion, load_script, openai_response, openai_response_events,
                                    parse_script)
from harness.gateway.server import bind_tcp
from harness.gateway.usage import Tokens
from harness.gateway.wire import Provider, error_body
from harness.runtime.process import stop_process_group

RECORD_LIMIT = 1000
START_TIMEOUT_S = 30.0


class Player:
    """The script's state: which turn is next and how many of its faults were served."""

    def __init__(self, script: Script):
        self.reset(script)

    def reset(self, script: Script) -> None:
        self.script, self.cursor, self.faults_served, self.serial = script, 0, 0, 0
        self.record: deque[dict] = deque(maxlen=RECORD_LIMIT)

    def next(self) -> Turn | Fault | None:
        if self.cursor >= len(self.script.turns):
            return None
        turn, served = self.script.turns[self.cursor], self.faults_served
        for fault in turn.faults:
            if served < fault.times:
                self.faults_served += 1
                return fault
            served -= fault.times
        self.cursor, self.faults_served = self.cursor + 1, 0
        return turn


def scripted_app(player: Player) -> Starlette:
    async def model_request(request: Request) -> Response:
        body = await request.body()
        data = json.loads(body or b"{}")
        provider: Provider = "anthropic" if request.url.path.startswith("/v1/messages") else "openai"
        step = player.next()
        if isinstance(step, Fault):
            await asyncio.sleep(step.stall_s)
            headers = {"retry-after": step.retry_after} if step.retry_after else {}
            kind = "rate_limit" if step.status == 429 else "upstream"
            answer: Response = JSONResponse(error_body(provider, kind, f"scripted fault: {step.status}"), step.status,
                                            headers=headers)
            sent = answer.body
        elif step is None:
            answer = JSONResponse(error_body(provider, "bad_request", f"the script has no turn left (it had "
                                                                      f"{len(player.script.turns)})"), 400)
            sent = answer.body
        else:
            player.serial += 1
            answer, sent = render(request.url.path, data, step, step.tokens(body), player.serial)
        remember(request, body, answer.status_code, sent)
        return answer

    async def count_tokens(request: Request) -> Response:
        body = await request.body()
        answer = JSONResponse({"input_tokens": len(body) // 4})
        remember(request, body, answer.status_code, answer.body)
        return answer

    async def models(request: Request) -> Response:
        ids = player.script.models
        if "anthropic-version" in request.headers:
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"} for m in ids]
            answer = JSONResponse({"data": data, "has_more": False, "first_id": ids[0], "last_id": ids[-1]})
        else:
            answer = JSONResponse({"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                               "owned_by": "scripted"} for m in ids]})
        remember(request, b"", answer.status_code, answer.body)
        return answer

    def remember(request: Request, body: bytes, status: int, sent: bytes) -> None:
        player.record.append({"method": request.method, "path": request.url.path, "query": request.url.query,
                              "headers": dict(request.headers), "body": body.decode(errors="replace"),
                              "status": status, "response": sent.decode(errors="replace")})

    async def received(request: Request) -> Response:
        return JSONResponse(list(player.record))

    async def load(request: Request) -> Response:
        try:
            script = parse_script(await request.json())
        except ValueError as e:
            return JSONResponse({"error": str(e)}, 400)
        player.reset(script)
        return JSONResponse({"turns": len(script.turns)})

    return Starlette(routes=[
        Route("/v1/messages", model_request, methods=["POST"]),
        Route("/v1/responses", model_request, methods=["POST"]),
        Route("/v1/chat/completions", model_request, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/models", models),
        Route("/scripted/received", received),
        Route("/scripted/script", load, methods=["PUT"]),
    ])


async def one_chunk_each(events: list[bytes]):
    for event in events:
        yield event


def render(path: str, data: dict, turn: Turn, tokens: Tokens, serial: int) -> tuple[Response, bytes]:
    """The turn's answer, and the bytes it sends (for the record)."""
    model, stream = data.get("model", "scripted"), bool(data.get("stream"))
    if path == "/v1/messages":
        body = anthropic_message(turn, model, serial, tokens)
        events = anthropic_events(body) if stream else None
    elif path == "/v1/responses":
        body = openai_response(turn, model, serial, tokens)
        events = openai_response_events(body) if stream else None
    else:
        body = chat_completion(turn, model, serial, tokens)
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        events = chat_chunks(body, include_usage) if stream else None
    if events is None:
        answer = JSONResponse(body)
        return answer, answer.body
    return (StreamingResponse(one_chunk_each(events), media_type="text/event-stream",
                              headers={"cache-control": "no-cache"}), b"".join(events))


class ScriptedServer:
    """A scripted server in a child process, for tests and benchmarks: `with ScriptedServer.start(...) as s:`."""

    def __init__(self, process: subprocess.Popen, url: str):
        self.process, self.url = process, url
        self._http = httpx.Client(base_url=url, timeout=30)

    @classmethod
    def start(cls, script: Path | None = None, port: int = 0, log: Path | None = None) -> ScriptedServer:
        argv = [sys.executable, "-m", "harness.gateway.scripted", *([str(script)] if script else []),
                "--port", str(port)]
        with open(log or "/dev/null", "ab") as err:
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        line = process.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://"):
            stop_process_group(process)
            raise RuntimeError(f"the scripted server did not start (exit {process.poll()}); see {log or 'its stderr'}")
        return cls(process, line)

    def load(self, script: dict) -> None:
        self._http.put("/scripted/script", json=script).raise_for_status()

    def received(self) -> list[dict]:
        return self._http.get("/scripted/received").json()

    def stop(self) -> None:
        self._http.close()
        stop_process_group(self.process)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.gateway.scripted", description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path, nargs="?", help="JSON or TOML script (default: none; PUT one later)")
    parser.add_argument("--port", type=int, default=0, help="127.0.0.1 port (default: a free one)")
    args = parser.parse_args(argv)
    player = Player(load_script(args.script) if args.script else Script(()))
    sock = bind_tcp(args.port)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(scripted_app(player), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
