"""`python -m harness.gateway serve`: the gateway process. It alone reads the provider keys (its environment's
ANTHROPIC_API_KEY / OPENAI_API_KEY, or --keys FILE), and serves, from one event loop:
  - the agents' API (harness/gateway/proxy.py) on a Unix socket (--socket, mode 0666: mounted into containers)
    and on 127.0.0.1:--port (the process runtime; 0 picks a free port);
  - the admin API on another Unix socket (--admin-socket, mode 0600), for the harness only:
        GET  /health                  {"pid", "tcp_url", "socket", "prices_as_of", "keys": [providers with a key]}
        POST /sessions                {"session_id", "folder", "budget": {"dollars", "tokens"}} -> {"token"}
        GET  /sessions/{id}           its Usage
        POST /sessions/{id}/close     its Usage, once its files are written; its token is refused from now on
SIGTERM or SIGINT stops it cleanly (pending files written); so does the death of the process that started it.
Its log (stdout) holds one line per event worth knowing, never a key, a token or a body."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from harness.gateway.prices import PRICES_FILE, load_prices
from harness.gateway.proxy import Proxy
from harness.gateway.sessions import Registry, Writer
from harness.gateway.upstream import RetryPolicy, Upstream, load_keys
from harness.gateway.usage import GatewayBudget

PARENT_POLL_S = 1.0
GRACEFUL_S = 5           # seconds open connections (a stream) get to finish at shutdown


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} gateway: {message}", flush=True)


def bind_unix(path: Path, mode: int) -> socket.socket:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, mode)
    sock.listen(512)
    return sock


def bind_tcp(port: int) -> socket.socket:
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted sockets only then (proto 0 meant 40 ms delayed-ACK
    # stalls on every keep-alive response)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(512)
    return sock


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield            # serve() handles the signals: one SIGTERM stops both servers


def admin_app(registry: Registry, info: dict) -> Starlette:
    def session_of(request: Request):
        try:
            return registry.get(request.path_params["session_id"])
        except KeyError:
            return None

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(info)

    async def open_session(request: Request) -> JSONResponse:
        try:
            data = await request.json()
            session = registry.open(str(data["session_id"]), Path(data["folder"]),
                                    GatewayBudget(**(data.get("budget") or {})))
        except (KeyError, TypeError, ValueError) as e:
            status = 409 if "already open" in str(e) else 400
            return JSONResponse({"error": f"cannot open a session: {e}"}, status)
        log(f"session {session.session_id} opened (budget {session.budget})")
        return JSONResponse({"token": session.token})

    async def usage(request: Request) -> JSONResponse:
        session = session_of(request)
        if session is None:
            return JSONResponse({"error": "no such session"}, 404)
        return JSONResponse(session.usage.to_json())

    async def close(request: Request) -> JSONResponse:
        if session_of(request) is None:
            return JSONResponse({"error": "no such session"}, 404)
        session = registry.close(request.path_params["session_id"])
        await anyio.to_thread.run_sync(registry.writer.flush)
        log(f"session {session.session_id} closed: {session.usage}")
        return JSONResponse(session.usage.to_json())

    return Starlette(routes=[Route("/health", health), Route("/sessions", open_session, methods=["POST"]),
                             Route("/sessions/{session_id}", usage),
                             Route("/sessions/{session_id}/close", close, methods=["POST"])])


async def serve(args: argparse.Namespace) -> None:
    keys = load_keys(args.keys, os.environ)
    prices = load_prices(args.prices)
    policy = RetryPolicy(args.retry_base, args.retry_max, args.outage_limit, args.upstream_timeout)
    upstreams = {k: v for k, v in (("anthropic", args.upstream_anthropic), ("openai", args.upstream_openai)) if v}
    upstream = Upstream(upstreams, keys, policy)
    registry = Registry(Writer(upstream.redact))
    agent_sockets = [bind_unix(args.socket, 0o666), bind_tcp(args.port)]
    admin_socket = bind_unix(args.admin_socket, 0o600)
    tcp_url = f"http://127.0.0.1:{agent_sockets[1].getsockname()[1]}"
    info = {"pid": os.getpid(), "tcp_url": tcp_url, "socket": str(args.socket), "prices_as_of": prices.as_of,
            "keys": sorted(keys)}
    # no server / date headers of its own: the upstream's pass through alone
    config = dict(log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=GRACEFUL_S,
                  server_header=False, date_header=False)
    servers = [Server(uvicorn.Config(Proxy(registry, upstream, prices, log).app(), **config)),
               Server(uvicorn.Config(admin_app(registry, info), **config))]

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    watchdog = asyncio.create_task(_watch_parent(os.getppid(), stop))
    log(f"serving {tcp_url} and {args.socket}; upstreams {upstream.bases}; "
        f"keys for {', '.join(keys) or 'no provider'}; prices as of {prices.as_of}; {policy}")
    try:
        await asyncio.gather(servers[0].serve(sockets=agent_sockets), servers[1].serve(sockets=[admin_socket]))
    finally:
        watchdog.cancel()
        await anyio.to_thread.run_sync(registry.writer.flush)
        await upstream.aclose()
        for path in (args.socket, args.admin_socket):
            path.unlink(missing_ok=True)
        log("stopped")


async def _watch_parent(parent: int, stop) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_POLL_S)
    log("the process that started the gateway is gone: stopping")
    stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.gateway", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="run the gateway until SIGTERM")
    p.add_argument("--socket", type=Path, required=True, help="the agents' Unix socket")
    p.add_argument("--admin-socket", type=Path, required=True, help="the harness's Unix socket (0600)")
    p.add_argument("--port", type=int, default=0, help="the agents' loopback TCP port (default: a free one)")
    p.add_argument("--keys", type=Path, help="key file: ANTHROPIC_API_KEY=... / OPENAI_API_KEY=... lines")
    p.add_argument("--upstream-anthropic", help="default https://api.anthropic.com")
    p.add_argument("--upstream-openai", help="default https://api.openai.com")
    p.add_argument("--prices", type=Path, default=PRICES_FILE, help="price table (default: the repo's)")
    defaults = RetryPolicy()
    p.add_argument("--retry-base", type=float, default=defaults.base_s, help="first backoff, seconds")
    p.add_argument("--retry-max", type=float, default=defaults.max_s, help="longest backoff, seconds")
    p.add_argument("--outage-limit", type=float, default=defaults.outage_limit_s,
                   help="seconds of failing upstream before a session ends as infra_error")
    p.add_argument("--upstream-timeout", type=float, default=defaults.timeout_s, help="connect/read timeout, seconds")
    asyncio.run(serve(parser.parse_args(argv)))
