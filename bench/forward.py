"""A loopback forwarder, run inside a sandbox: TCP connections to 127.0.0.1:PORT are relayed, byte for byte and
both ways, to a Unix socket (the LLM gateway's, mounted into a container that keeps `--network none`), for agent
CLIs that need a URL rather than a socket. Stdlib only: it runs with the image's Python and nothing else.

    python -m bench.forward --listen 127.0.0.1:PORT --socket PATH [-- COMMAND ...]

Prints `forwarding 127.0.0.1:PORT -> PATH` once it listens (PORT 0 picks a free port, the line names it); runs
until killed. With a COMMAND (the docker runtime's gateway mode), it listens first, then serves from a child
process while COMMAND replaces this one, so that the command keeps this process's pid and gets its signals; the
forwarder ends with the sandbox. It listens on a loopback address only, and opens no connection but to the socket."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

CHUNK = 65536


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of file, then pass the end of file on (the other direction may still be talking)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, socket_path: str) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(socket_path)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))
    finally:
        for writer in (upstream_writer, client_writer):
            writer.close()


async def serve(listener: socket.socket, socket_path: str) -> None:
    server = await asyncio.start_server(lambda r, w: relay(r, w, socket_path), sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.forward", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="loopback HOST:PORT (default 127.0.0.1:0)")
    parser.add_argument("--socket", required=True, help="the Unix socket to relay to")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="after --: a command to run once it listens")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error(f"--listen must be a loopback address, not {host!r}")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    listener = socket.create_server((host, int(port)), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    print(f"forwarding {host}:{listener.getsockname()[1]} -> {args.socket}", flush=True)
    if command and os.fork() != 0:
        os.execvp(command[0], command)   # the listener is not inherited (PEP 446); the child serves on it
    try:
        asyncio.run(serve(listener, args.socket))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
