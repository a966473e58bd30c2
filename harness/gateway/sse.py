"""Server-sent events both ways: `encode` (the scripted server writes streams) and `SSEParser`, an incremental
reader for the gateway, which passes an upstream stream on byte for byte and reads a copy of it to meter and
reassemble it. Only what the provider APIs use: `event:` and `data:` fields, comments ignored."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    event: str | None     # the `event:` field; OpenAI's Chat Completions streams have none
    data: str

    def json(self) -> dict | None:
        """The data as a JSON object; None for a sentinel such as Chat Completions' `[DONE]`."""
        try:
            value = json.loads(self.data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def encode(data: dict | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


class SSEParser:
    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by chunk (events may span chunks)."""
        self._buffer = (self._buffer + chunk).replace(b"\r\n", b"\n")
        *blocks, self._buffer = self._buffer.split(b"\n\n")
        return [e for e in map(_parse_block, blocks) if e is not None]


def _parse_block(block: bytes) -> Event | None:
    event, data = None, []
    for line in block.decode(errors="replace").split("\n"):
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    return Event(event, "\n".join(data)) if data or event else None
