"""A local HTTP server that serves parquet shards the way Hugging Face does, with faults on demand.

GET /resolve/main/<name> answers 302 to /cdn/<name> with X-Linked-Etag (sha256) and X-Linked-Size,
like huggingface.co for LFS files; /cdn/<name> serves the bytes and honours `Range: bytes=N-`.
Faults, consumed one per /cdn request: "truncate" (announces the full length, sends half, closes),
"corrupt" (one byte flipped), "error500", "slow" (sends the body in small timed pieces).
"""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq


def make_shard(texts: list[str]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": texts}), sink)
    return sink.getvalue().to_pybytes()


class ShardServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.announce_checksums = True
        self.requests: list[tuple[str, str | None]] = []      # (path, Range header)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/resolve/main"

    def start(self) -> ShardServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def next_fault(self, name: str) -> str | None:
        queue = self.faults.get(name, [])
        return queue.pop(0) if queue else None


def _handler(server: ShardServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            server.requests.append((self.path, self.headers.get("Range")))
            kind, _, name = self.path.lstrip("/").partition("/")
            name = name.removeprefix("main/")
            if name not in server.files:
                self.send_error(404)
            elif kind == "resolve":
                self._redirect(name)
            else:
                self._serve(name, server.files[name], server.next_fault(name))

        def _redirect(self, name: str) -> None:
            self.send_response(302)
            self.send_header("Location", f"/cdn/{name}")
            if server.announce_checksums:
                data = server.files[name]
                self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _serve(self, name: str, data: bytes, fault: str | None) -> None:
            if fault == "error500":
                self.send_error(500)
                return
            if fault == "corrupt":
                data = data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
            start = int(self.headers.get("Range", "bytes=0-").removeprefix("bytes=").rstrip("-") or 0)
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            if fault == "truncate":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            pieces = 50 if fault == "slow" else 1
            step = -(-len(body) // pieces)
            for i in range(0, len(body), step):
                self.wfile.write(body[i:i + step])
                self.wfile.flush()
                if fault == "slow":
                    time.sleep(0.1)

    return Handler
