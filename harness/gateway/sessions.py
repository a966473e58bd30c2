"""The gateway's sessions: token -> session, the caps, metering into Usage, and the two files each session's
folder gets, written in order by one writer thread (never on the request path):

    <folder>/transcript.jsonl   one Exchange per line: every request forwarded or refused, its answer (a stream
                                reassembled into the message or response it carried, with its event count),
                                the failed upstream attempts before it, its tokens and dollars; no header is kept
    <folder>/usage.json         the session's Usage, rewritten atomically after each exchange

Provider keys are redacted from every line before it is written."""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness.gateway.upstream import Attempt
from harness.gateway.usage import GatewayBudget, Tokens, Usage
from harness.store import write_json

TRANSCRIPT = "transcript.jsonl"
USAGE_FILE = "usage.json"


@dataclass
class Exchange:
    """One request and its answer, as the transcript records it (bodies decoded by the writer thread)."""
    route: str
    request: bytes
    status: int
    response: bytes | dict | None        # the body; a stream's reassembled message or response
    time: float = field(default_factory=time.time)
    seconds: float = 0.0
    model: str | None = None
    events: int | None = None            # a stream's event count; None when the answer was not a stream
    attempts: list[Attempt] = field(default_factory=list)
    tokens: Tokens | None = None
    dollars: float = 0.0
    usage_reported: bool = True          # False: the provider reported no usage, tokens were estimated
    refused: str | None = None           # why the gateway answered itself (cap, infra_error, unpriced model)
    error: str | None = None             # a stream that broke after it began

    def line(self) -> dict:
        record = asdict(self)
        record["request"], record["response"] = _decoded(self.request), _decoded(self.response)
        return record


def _decoded(body: bytes | dict | None):
    if not isinstance(body, bytes):
        return body
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


@dataclass
class Session:
    session_id: str
    folder: Path
    budget: GatewayBudget
    token: str
    usage: Usage = field(default_factory=Usage)
    closed: bool = False

    def refusal(self) -> str | None:
        """Why no request of this session may go upstream any more; None while it may."""
        if self.usage.infra_error:
            return f"session {self.session_id} ended by an upstream outage: {self.usage.infra_error}"
        if self.usage.stopped:
            cap = self.budget.dollars if self.usage.stopped == "dollars" else self.budget.tokens
            return f"session {self.session_id} reached its {self.usage.stopped} cap ({cap:g})"
        return None

    def charge(self, exchange: Exchange) -> None:
        self.usage = self.usage.add(exchange.tokens or Tokens(), exchange.dollars, len(exchange.attempts),
                                    estimated=not exchange.usage_reported)
        if self.usage.stopped is None and (reason := self.budget.reached(self.usage)):
            self.usage = replace(self.usage, stopped=reason)

    def fail(self, message: str, attempts: int) -> None:
        self.usage = replace(self.usage, infra_error=message, retries=self.usage.retries + attempts)


class Registry:
    """Sessions by id and by token; a closed session's token stays known, and refused."""

    def __init__(self, writer: Writer):
        self.writer = writer
        self._by_id: dict[str, Session] = {}
        self._by_token: dict[str, Session] = {}

    def open(self, session_id: str, folder: Path, budget: GatewayBudget) -> Session:
        if session_id in self._by_id and not self._by_id[session_id].closed:
            raise ValueError(f"session {session_id} is already open")
        session = Session(session_id, folder, budget, secrets.token_urlsafe(32))
        session.usage = replace(session.usage, stopped=budget.reached(session.usage))   # a zero cap: nothing goes
        folder.mkdir(parents=True, exist_ok=True)
        self._by_id[session_id] = self._by_token[session.token] = session
        self.writer.usage(session)
        return session

    def by_token(self, token: str | None) -> Session | None:
        session = self._by_token.get(token or "")
        return session if session is not None and not session.closed else None

    def get(self, session_id: str) -> Session:
        return self._by_id[session_id]

    def close(self, session_id: str) -> Session:
        """Its token is refused from now on; exchanges in flight are still metered and recorded."""
        session = self._by_id[session_id]
        session.closed = True
        return session


class Writer:
    """One thread appends transcript lines and rewrites usage.json, in the order the exchanges ended."""

    def __init__(self, redact: Callable[[bytes], bytes]):
        self.redact = redact
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="gateway-writer", daemon=True).start()

    def record(self, session: Session, exchange: Exchange) -> None:
        self._queue.put((session, exchange))

    def usage(self, session: Session) -> None:
        self._queue.put((session, None))

    def flush(self) -> None:
        self._queue.join()

    def _run(self) -> None:
        while True:
            session, exchange = self._queue.get()
            try:
                if exchange is not None:
                    line = json.dumps(exchange.line(), separators=(",", ":"), default=str).encode()
                    with open(session.folder / TRANSCRIPT, "ab") as f:
                        f.write(self.redact(line) + b"\n")
                write_json(session.folder / USAGE_FILE, session.usage.to_json())
            except OSError as e:               # a folder removed under a running session: say so, keep serving
                print(f"gateway: cannot write {session.folder}: {e}", flush=True)
            finally:
                self._queue.task_done()
