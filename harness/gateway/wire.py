"""What the gateway knows of the providers' wire formats: the routes it serves, its own error bodies in each
API's format, where the usage is in a response, and how a stream is reassembled into the message or response it
carried (for the transcript and the meter). Anything else in a body passes through unread."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from harness.gateway.sse import Event
from harness.gateway.usage import Tokens

Provider = Literal["anthropic", "openai"]
Kind = Literal["messages", "count_tokens", "responses", "chat", "models"]
ErrorKind = Literal["auth", "budget", "bad_request", "upstream", "rate_limit"]


@dataclass(frozen=True)
class Route:
    kind: Kind
    provider: Provider | None    # None: decided per request (GET /v1/models serves both CLIs)
    metered: bool                # carries a model and usage: the model must be priced


ROUTES = {
    "/v1/messages": Route("messages", "anthropic", True),
    "/v1/messages/count_tokens": Route("count_tokens", "anthropic", False),
    "/v1/responses": Route("responses", "openai", True),
    "/v1/chat/completions": Route("chat", "openai", True),
    "/v1/models": Route("models", None, False),
}

# (Anthropic error type, OpenAI error type, OpenAI error code) of each error the gateway or the scripted server sends
ERROR_TYPES: dict[ErrorKind, tuple[str, str, str | None]] = {
    "auth": ("authentication_error", "invalid_request_error", "invalid_api_key"),
    "budget": ("billing_error", "insufficient_quota", "insufficient_quota"),
    "bad_request": ("invalid_request_error", "invalid_request_error", None),
    "upstream": ("api_error", "server_error", None),
    "rate_limit": ("rate_limit_error", "requests", "rate_limit_exceeded"),
}


def error_body(provider: Provider, kind: ErrorKind, message: str) -> dict:
    anthropic_type, openai_type, code = ERROR_TYPES[kind]
    if provider == "anthropic":
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    return {"error": {"message": message, "type": openai_type, "param": None, "code": code}}


def usage_of(kind: Kind, body: dict | None) -> Tokens | None:
    """The provider's usage in a response body (or a reassembled stream); None when it reported none."""
    usage = (body or {}).get("usage")
    if not isinstance(usage, dict):
        return None
    if kind == "messages":
        return Tokens(usage.get("input_tokens") or 0, usage.get("output_tokens") or 0,
                      usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0)
    prefix = "input" if kind == "responses" else "prompt"
    output = "output_tokens" if kind == "responses" else "completion_tokens"
    cached = (usage.get(f"{prefix}_tokens_details") or {}).get("cached_tokens") or 0
    return Tokens((usage.get(f"{prefix}_tokens") or 0) - cached, usage.get(output) or 0, cached, 0)


def estimate(request: bytes, response: dict | None) -> Tokens:
    """Tokens of an exchange whose provider reported no usage: about 4 bytes of JSON per token."""
    return Tokens(len(request) // 4, len(json.dumps(response or {}, separators=(",", ":"))) // 4)


class Reassembler:
    """Reads a stream's events and gives the message or response it carried; this base reads nothing (a stream
    from a route that should not stream)."""

    def feed(self, event: Event) -> None:
        pass

    def result(self) -> dict | None:
        return None


class MessagesStream(Reassembler):
    """Anthropic: message_start, content_block_start / _delta / _stop, message_delta (stop reason, cumulative
    usage), message_stop; an `error` event is kept as the message's `error`."""

    def __init__(self) -> None:
        self.message: dict | None = None

    def feed(self, event: Event) -> None:
        data = event.json() or {}
        kind = data.get("type")
        if kind == "message_start":
            self.message = dict(data.get("message") or {}, content=[])
        elif self.message is None:
            return
        elif kind == "content_block_start":
            self.message["content"].append(dict(data.get("content_block") or {}))
        elif kind == "content_block_delta" and self.message["content"]:
            _apply_delta(self.message["content"][-1], data.get("delta") or {})
        elif kind == "content_block_stop" and self.message["content"]:
            block = self.message["content"][-1]
            if "partial_json" in block:
                raw = block.pop("partial_json")
                try:
                    block["input"] = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    block["input"] = raw
        elif kind == "message_delta":
            self.message.update(data.get("delta") or {})
            self.message["usage"] = {**(self.message.get("usage") or {}), **(data.get("usage") or {})}
        elif kind == "error":
            self.message["error"] = data.get("error")

    def result(self) -> dict | None:
        return self.message


def _apply_delta(block: dict, delta: dict) -> None:
    """text_delta, input_json_delta, thinking_delta, signature_delta: strings appended to the block's field of
    the same name; citations_delta: its citation appended to the block's citations."""
    for key, value in delta.items():
        if key == "type":
            continue
        if isinstance(value, str):
            block[key] = block.get(key, "") + value
        else:
            block.setdefault(f"{key}s", []).append(value)


class ResponsesStream(Reassembler):
    """OpenAI Responses: the last event carrying the whole response (response.completed, or .incomplete /
    .failed) is the result; an `error` event is kept as its `error`."""

    def __init__(self) -> None:
        self.response: dict | None = None

    def feed(self, event: Event) -> None:
        data = event.json() or {}
        if isinstance(data.get("response"), dict):
            self.response = data["response"]
        elif data.get("type") == "error":
            self.response = dict(self.response or {}, error=data)

    def result(self) -> dict | None:
        return self.response


class ChatStream(Reassembler):
    """OpenAI Chat Completions: chunks merged into one chat.completion (content and tool-call arguments
    concatenated per choice and index); usage from the final chunk, present only with include_usage."""

    def __init__(self) -> None:
        self.completion: dict | None = None
        self.choices: dict[int, dict] = {}

    def feed(self, event: Event) -> None:
        data = event.json()
        if data is None:
            return
        if self.completion is None:
            self.completion = {k: data.get(k) for k in ("id", "created", "model")} | {"object": "chat.completion"}
        if data.get("usage"):
            self.completion["usage"] = data["usage"]
        if data.get("error"):
            self.completion["error"] = data["error"]
        for choice in data.get("choices") or []:
            merged = self.choices.setdefault(choice.get("index", 0), {"index": choice.get("index", 0), "message": {}})
            if choice.get("finish_reason"):
                merged["finish_reason"] = choice["finish_reason"]
            for key, value in (choice.get("delta") or {}).items():
                if key == "tool_calls":
                    _merge_tool_calls(merged["message"].setdefault("tool_calls", []), value)
                elif isinstance(value, str) and key != "role":
                    merged["message"][key] = (merged["message"].get(key) or "") + value
                elif value is not None:
                    merged["message"][key] = value

    def result(self) -> dict | None:
        if self.completion is None:
            return None
        return self.completion | {"choices": [self.choices[i] for i in sorted(self.choices)]}


def _merge_tool_calls(calls: list[dict], deltas: list[dict]) -> None:
    for delta in deltas:
        index = delta.get("index", 0)
        while len(calls) <= index:
            calls.append({"function": {"arguments": ""}})
        call = calls[index]
        call.update({k: v for k, v in delta.items() if k not in ("index", "function") and v is not None})
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] = function["name"]
        call["function"]["arguments"] += function.get("arguments") or ""


REASSEMBLERS: dict[Kind, type[Reassembler]] = {"messages": MessagesStream, "responses": ResponsesStream,
                                               "chat": ChatStream}
