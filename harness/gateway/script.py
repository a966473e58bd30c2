"""The scripted model server's script, and how a turn looks on each API's wire. A script is a JSON or TOML file:

    models = ["scripted-claude", "scripted-gpt"]          # what /v1/models lists (this is the default)

    [[turns]]                                             # played in order, one per model request
    text = "I will look at train.py first."
    tool_calls = [{name = "bash", arguments = {command = "cat train.py"}}]
    usage = {input_tokens = 1000, output_tokens = 200, cache_read_tokens = 3000, cache_write_tokens = 400}
    faults = [{status = 429, retry_after = "1"}, {status = 500, times = 3}, {stall_s = 5}]

A turn's faults answer, in order, the requests that arrive for it (each `times` times, default 1) before the turn
itself does: a fault is an error `status` (default 504) in the API's error format, with `retry-after` if given,
sent after `stall_s` seconds. Usage numbers follow Tokens (input = uncached input); left out, they are estimated
at 4 bytes a token. The wire shapes follow the real APIs: an Anthropic message (text and tool_use blocks) or its
events (message_start, content_block_start / ping / content_block_delta with text_delta or input_json_delta /
content_block_stop, message_delta with usage, message_stop); an OpenAI response (message and function_call items)
or its events (response.created, response.in_progress, response.output_item.added, content_part / output_text or
function_call_arguments deltas and dones, response.output_item.done, response.completed with usage); a chat
completion or its chunks (role, content pieces, tool-call pieces, finish_reason, a usage chunk when
stream_options.include_usage, [DONE])."""

from __future__ import annotations

import itertools
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.gateway.sse import encode
from harness.gateway.usage import Tokens

DEFAULT_MODELS = ("scripted-claude", "scripted-gpt")
PIECE = 24                  # characters per streamed delta


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict


@dataclass(frozen=True)
class Fault:
    status: int = 504
    retry_after: str | None = None
    stall_s: float = 0.0
    times: int = 1


@dataclass(frozen=True)
class Turn:
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Tokens | None = None
    faults: tuple[Fault, ...] = ()

    def tokens(self, request: bytes) -> Tokens:
        arguments = sum(len(json.dumps(c.arguments)) for c in self.tool_calls)
        return self.usage or Tokens(len(request) // 4, (len(self.text) + arguments) // 4 + 1)


@dataclass(frozen=True)
class Script:
    turns: tuple[Turn, ...]
    models: tuple[str, ...] = DEFAULT_MODELS


def parse_script(data: dict) -> Script:
    turns = []
    for i, t in enumerate(data.get("turns", [])):
        try:
            turns.append(Turn(t.get("text", ""), tuple(ToolCall(c["name"], c.get("arguments", {}))
                                                        for c in t.get("tool_calls", [])),
                              Tokens(**t["usage"]) if "usage" in t else None,
                              tuple(Fault(**f) for f in t.get("faults", []))))
        except (KeyError, TypeError) as e:
            raise ValueError(f"script turn {i}: {e}") from e
    return Script(tuple(turns), tuple(data.get("models", DEFAULT_MODELS)))


def load_script(path: Path) -> Script:
    text = path.read_text()
    return parse_script(tomllib.loads(text) if path.suffix == ".toml" else json.loads(text))


def pieces(text: str) -> list[str]:
    return [text[i:i + PIECE] for i in range(0, len(text), PIECE)]


# ---------------------------------------------------------------------------------------------------
# Anthropic Messages

def anthropic_message(turn: Turn, model: str, serial: int, t: Tokens) -> dict:
    content = [{"type": "text", "text": turn.text}] if turn.text else []
    content += [{"type": "tool_use", "id": f"toolu_{serial:06d}{i}", "name": c.name, "input": c.arguments}
                for i, c in enumerate(turn.tool_calls)]
    return {"id": f"msg_{serial:06d}", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": "tool_use" if turn.tool_calls else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": t.input_tokens, "cache_creation_input_tokens": t.cache_write_tokens,
                      "cache_read_input_tokens": t.cache_read_tokens, "output_tokens": t.output_tokens}}


def anthropic_events(message: dict) -> list[bytes]:
    def event(kind: str, **fields) -> bytes:
        return encode({"type": kind, **fields}, kind)

    start = dict(message, content=[], stop_reason=None, usage=dict(message["usage"], output_tokens=1))
    out = [event("message_start", message=start)]
    for index, block in enumerate(message["content"]):
        text = block["type"] == "text"
        out.append(event("content_block_start", index=index, content_block=dict(block, text="") if text
                         else dict(block, input={})))
        if index == 0:
            out.append(event("ping"))
        for piece in pieces(block["text"]) if text else [""] + pieces(json.dumps(block["input"])):
            delta = ({"type": "text_delta", "text": piece} if text
                     else {"type": "input_json_delta", "partial_json": piece})
            out.append(event("content_block_delta", index=index, delta=delta))
        out.append(event("content_block_stop", index=index))
    out.append(event("message_delta", delta={"stop_reason": message["stop_reason"], "stop_sequence": None},
                     usage={"output_tokens": message["usage"]["output_tokens"]}))
    return out + [event("message_stop")]


# ---------------------------------------------------------------------------------------------------
# OpenAI Responses

def openai_response(turn: Turn, model: str, serial: int, t: Tokens) -> dict:
    output = [{"type": "message", "id": f"msg_{serial:06d}", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": turn.text, "annotations": []}]}] if turn.text else []
    output += [{"type": "function_call", "id": f"fc_{serial:06d}{i}", "call_id": f"call_{serial:06d}{i}",
                "name": c.name, "arguments": json.dumps(c.arguments), "status": "completed"}
               for i, c in enumerate(turn.tool_calls)]
    return {"id": f"resp_{serial:06d}", "object": "response", "created_at": int(time.time()), "status": "completed",
            "model": model, "output": output, "error": None, "incomplete_details": None,
            "usage": {"input_tokens": t.input_tokens + t.cache_read_tokens,
                      "input_tokens_details": {"cached_tokens": t.cache_read_tokens},
                      "output_tokens": t.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": t.input_tokens + t.cache_read_tokens + t.output_tokens}}


def openai_response_events(response: dict) -> list[bytes]:
    sequence = itertools.count()

    def event(kind: str, **fields) -> bytes:
        return encode({"type": kind, "sequence_number": next(sequence), **fields}, kind)

    pending = dict(response, status="in_progress", output=[], usage=None)
    out = [event("response.created", response=pending), event("response.in_progress", response=pending)]
    for index, item in enumerate(response["output"]):
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            part = item["content"][0]
            out.append(event("response.output_item.added", output_index=index,
                             item=dict(item, status="in_progress", content=[])))
            out.append(event("response.content_part.added", **at, content_index=0, part=dict(part, text="")))
            out += [event("response.output_text.delta", **at, content_index=0, delta=p) for p in pieces(part["text"])]
            out.append(event("response.output_text.done", **at, content_index=0, text=part["text"]))
            out.append(event("response.content_part.done", **at, content_index=0, part=part))
        else:
            out.append(event("response.output_item.added", output_index=index,
                             item=dict(item, status="in_progress", arguments="")))
            out += [event("response.function_call_arguments.delta", **at, delta=p) for p in pieces(item["arguments"])]
            out.append(event("response.function_call_arguments.done", **at, arguments=item["arguments"]))
        out.append(event("response.output_item.done", output_index=index, item=item))
    return out + [event("response.completed", response=response)]


# ---------------------------------------------------------------------------------------------------
# OpenAI Chat Completions

def chat_completion(turn: Turn, model: str, serial: int, t: Tokens) -> dict:
    message: dict = {"role": "assistant", "content": turn.text or None, "refusal": None}
    if turn.tool_calls:
        message["tool_calls"] = [{"id": f"call_{serial:06d}{i}", "type": "function",
                                  "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                                 for i, c in enumerate(turn.tool_calls)]
    return {"id": f"chatcmpl-{serial:06d}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if turn.tool_calls else "stop"}],
            "usage": {"prompt_tokens": t.input_tokens + t.cache_read_tokens, "completion_tokens": t.output_tokens,
                      "total_tokens": t.input_tokens + t.cache_read_tokens + t.output_tokens,
                      "prompt_tokens_details": {"cached_tokens": t.cache_read_tokens},
                      "completion_tokens_details": {"reasoning_tokens": 0}}}


def chat_chunks(completion: dict, include_usage: bool) -> list[bytes]:
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"]}

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return encode(base | {"choices": [choice]} | ({"usage": None} if include_usage else {}))

    choice = completion["choices"][0]
    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    out += [chunk({"content": p}) for p in pieces(choice["message"]["content"] or "")]
    for i, call in enumerate(choice["message"].get("tool_calls", [])):
        function = call["function"]
        out.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                          "function": {"name": function["name"], "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
                for p in pieces(function["arguments"])]
    out.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        out.append(encode(base | {"choices": [], "usage": completion["usage"]}))
    return out + [encode("[DONE]")]
