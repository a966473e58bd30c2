"""<session>/transcript.md: a session for a person to read, rendered from the gateway's transcript.jsonl (every
model request and its answer, tokens and dollars) and the agent's agent.log (the CLI's own JSON events; the
harness's `[arbench]` lines: where it was continued, why it stopped).

Every request repeats the conversation so far, so each is shown by what it adds: the tool results (and any new
user message) it carries, then the model's answer (text, thinking, tool calls). A request that does not extend
an earlier one opens a new conversation (a continued CLI that starts afresh, a side request); one that rewrites
its history is shown from where it changed. Tool results arrive with the request after the call. Long texts are
cut in the middle with a note. Nothing here adds to what the gateway recorded: no headers, and its files hold
no provider key (it redacts them before writing).

Covers the three wire formats the gateway serves (wire.ROUTES): Anthropic Messages, OpenAI Responses (function
and custom tool calls, reasoning items) and Chat Completions; count_tokens and models requests are not shown.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from agents.base import AGENT_LOG
from bench.sources.base import atomic_write_bytes
from harness.gateway.sessions import TRANSCRIPT, USAGE_FILE
from harness.gateway.wire import ROUTES

TRANSCRIPT_MD = "transcript.md"
MAX_TEXT = 4000              # characters of one text, argument or tool result shown; the middle of a longer one is cut
MAX_THREADS = 8              # conversations remembered at once (a CLI's main one, its sub-agents, side requests)
RESUME = re.compile(r"^\[arbench\]\s+(?:(\d\d:\d\d:\d\d)\s+)?resume (\d+)\b(.*)$")
AFTER_REQUESTS = re.compile(r"after (\d+) (?:model )?requests?")
MODEL_ITEMS = ("function_call", "custom_tool_call", "reasoning", "local_shell_call", "web_search_call",
               "file_search_call", "computer_call", "image_generation_call", "code_interpreter_call", "mcp_call")


@dataclass(frozen=True)
class Item:
    """One piece of a conversation, whatever the wire."""
    kind: Literal["system", "user", "assistant", "thinking", "call", "result", "note"]
    text: str = ""
    name: str = ""                 # a call's tool (a result's, found by its call id)
    call_id: str = ""
    arguments: Any = None          # a call's arguments: a dict, or the raw text of a custom tool's input
    error: bool = False            # a result the client marked as an error


# ---------------------------------------------------------------------------------------------------
# Each wire: a request's entries (what the next request repeats), their items, and the answer's items

def _text(content: Any) -> str:
    """The text of a content field: a string, or a list of parts with text (other parts named in brackets)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return "" if content is None else json.dumps(content)
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict):
            text = part.get("text", part.get("refusal"))
            parts.append(text if isinstance(text, str) else f"[{part.get('type', 'part')}]")
    return "\n".join(parts)


def _json(raw: Any) -> Any:
    """raw parsed when it is JSON text, else raw itself."""
    try:
        return json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return raw


def anthropic_entries(request: dict) -> list:
    system = request.get("system")
    return ([{"system": system}] if system else []) + list(request.get("messages") or [])


def anthropic_items(entry: dict) -> list[Item]:
    if "system" in entry:
        return [Item("system", _text(entry["system"]))]
    role, content = entry.get("role"), entry.get("content")
    if isinstance(content, str):
        return [Item("assistant" if role == "assistant" else "user", content)]
    items = []
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            items.append(Item("assistant" if role == "assistant" else "user", block.get("text", "")))
        elif kind == "tool_result":
            items.append(Item("result", _text(block.get("content")), call_id=block.get("tool_use_id", ""),
                              error=bool(block.get("is_error"))))
        elif kind in ("tool_use", "server_tool_use"):
            items.append(Item("call", name=block.get("name", ""), call_id=block.get("id", ""),
                              arguments=_json(block.get("input"))))
        elif kind == "thinking":
            items.append(Item("thinking", block.get("thinking", "")))
        elif kind == "redacted_thinking":
            items.append(Item("thinking", "(redacted)"))
        else:
            items.append(Item("note", f"({kind})"))
    return items


def responses_entries(request: dict) -> list:
    instructions, given = request.get("instructions"), request.get("input")
    entries = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])
    return ([{"system": instructions}] if instructions else []) + entries


def responses_items(entry: dict) -> list[Item]:
    kind, role = entry.get("type", "message"), entry.get("role")
    if "system" in entry:
        return [Item("system", _text(entry["system"]))]
    if kind == "message":
        who = {"assistant": "assistant", "system": "system", "developer": "system"}.get(role, "user")
        return [Item(who, _text(entry.get("content")))]
    if kind == "function_call":
        return [Item("call", name=entry.get("name", ""), call_id=entry.get("call_id", ""),
                     arguments=_json(entry.get("arguments")))]
    if kind == "custom_tool_call":
        return [Item("call", name=entry.get("name", ""), call_id=entry.get("call_id", ""),
                     arguments=entry.get("input"))]
    if kind in ("function_call_output", "custom_tool_call_output"):
        return [Item("result", _text(entry.get("output")), call_id=entry.get("call_id", ""))]
    if kind == "reasoning":
        summary = _text(entry.get("summary")) or _text(entry.get("content"))
        return [Item("thinking", summary or "(encrypted)")]
    if kind == "local_shell_call":
        return [Item("call", name="local_shell", call_id=entry.get("call_id", ""), arguments=entry.get("action"))]
    return [Item("note", f"({kind})")]


def chat_items(entry: dict) -> list[Item]:
    role = entry.get("role")
    if role in ("system", "developer"):
        return [Item("system", _text(entry.get("content")))]
    if role == "tool":
        return [Item("result", _text(entry.get("content")), call_id=entry.get("tool_call_id", ""))]
    if role != "assistant":
        return [Item("user", _text(entry.get("content")))]
    items = [Item("thinking", entry["reasoning_content"])] if entry.get("reasoning_content") else []
    if text := _text(entry.get("content")) or entry.get("refusal"):
        items.append(Item("assistant", text))
    for call in entry.get("tool_calls") or []:
        function = call.get("function") or {}
        items.append(Item("call", name=function.get("name", ""), call_id=call.get("id", ""),
                          arguments=_json(function.get("arguments"))))
    return items


@dataclass(frozen=True)
class Wire:
    entries: Any                   # request -> its conversation entries
    items: Any                     # entry -> items
    answer: Any                    # response -> its entries (the model's output)
    from_model: Any                # entry -> whether the model wrote it (repeated by the client after its answer)


WIRES = {
    "messages": Wire(anthropic_entries, anthropic_items, lambda r: [{"role": "assistant", "content": r["content"]}],
                     lambda e: e.get("role") == "assistant"),
    "responses": Wire(responses_entries, responses_items, lambda r: list(r.get("output") or []),
                      lambda e: e.get("role") == "assistant" or e.get("type") in MODEL_ITEMS),
    "chat": Wire(lambda r: list(r.get("messages") or []), chat_items,
                 lambda r: [(r.get("choices") or [{}])[0].get("message") or {}],
                 lambda e: e.get("role") == "assistant"),
}


def _key(entry: Any) -> str:
    """An entry as compared across requests: cache markers, which clients move from turn to turn, left out, and
    text blocks read as the plain strings they stand for (a client may send one as either, with a marker or not)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            value = {k: strip(v) for k, v in value.items() if k != "cache_control"}
            return value["text"] if value.keys() == {"type", "text"} and value["type"] == "text" else value
        if isinstance(value, list):
            value = [strip(v) for v in value]
            return value[0] if len(value) == 1 and isinstance(value[0], str) else value
        return value
    return hashlib.sha256(json.dumps(strip(entry), sort_keys=True, default=str).encode()).hexdigest()


class Conversations:
    """The conversations seen so far, each as its last request's entry keys: which entries of a request are new."""

    def __init__(self) -> None:
        self.threads: list[list[str]] = []

    def new(self, entries: list, wire: Wire, continued: bool) -> tuple[list, str | None]:
        """The entries to show and a note on where they belong. continued: the request names the response it
        follows (Responses' previous_response_id), so that all it carries is new."""
        keys = [_key(e) for e in entries]
        best, shared = None, 0
        for thread in self.threads:
            n = next((i for i, (a, b) in enumerate(zip(thread, keys)) if a != b), min(len(thread), len(keys)))
            if best is None or n > shared:
                best, shared = thread, n
        if best is not None and shared > 0:
            self.threads.remove(best)
        self.threads = (self.threads + [keys])[-MAX_THREADS:]
        if continued or (best is not None and shared == len(best)):
            return [e for e in entries[shared:] if not wire.from_model(e)], None
        if all(item.kind == "system" for e in entries[:shared] for item in wire.items(e)):
            return entries[shared:], ("a new conversation" + (", with the same system prompt" if shared else "")
                                      if best is not None else None)
        return entries[shared:], (f"a conversation that begins like an earlier one (its first {shared} messages are "
                                  f"shown above), or one whose history was rewritten")


# ---------------------------------------------------------------------------------------------------
# agent.log: where the harness continued the agent, its own notes, the CLI's final word

@dataclass
class Resume:
    number: int
    line: str
    clock: str | None              # HH:MM:SS, local time
    after_requests: int | None     # the model requests forwarded before it, when the line says
    cli_events: list[str] = field(default_factory=list)   # the CLI's notes from the run it ended


@dataclass
class AgentLog:
    first_events: list[str] = field(default_factory=list)   # the CLI's notes from its first run
    resumes: list[Resume] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)          # every other `[arbench]` line


def cli_event(event: dict) -> str | None:
    """What a CLI event says that the gateway cannot: its final result, its errors; None for the rest."""
    kind, item = event.get("type"), event.get("item") if isinstance(event.get("item"), dict) else {}
    if kind == "result":       # Claude Code's last line
        text = event.get("result") or event.get("error") or ""
        return (f"**The CLI's result** ({event.get('subtype', '?')}, {event.get('num_turns', '?')} turns):\n\n"
                + _quote(_cut(str(text))))
    if kind == "error" or (isinstance(kind, str) and kind.endswith(".failed")) or item.get("type") == "error":
        error = event.get("error") or item or event
        message = error.get("message") or (error.get("data") or {}).get("message") if isinstance(error, dict) else error
        return f"**The CLI reported an error**: {_cut(str(message or json.dumps(error)), 600)}"
    return None


def read_agent_log(path: Path) -> AgentLog:
    log = AgentLog()
    if not path.exists():
        return log
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.strip()
        if match := RESUME.match(line):
            after = AFTER_REQUESTS.search(match.group(3))
            log.resumes.append(Resume(int(match.group(2)), line, match.group(1),
                                      int(after.group(1)) if after else None))
        elif line.startswith("[arbench]"):
            log.notes.append(line)
        elif line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (note := cli_event(event)):
                (log.resumes[-1].cli_events if log.resumes else log.first_events).append(note)
    return log


def _due(resume: Resume, exchange: dict, forwarded: int, previous: float | None) -> bool:
    """Whether a continue happened before this exchange: by the count of requests the line gives, or else by its
    clock (to the second; a day later when that clock is before the previous exchange's)."""
    if resume.after_requests is not None:
        return forwarded >= resume.after_requests
    if resume.clock is None:
        return False
    reference = datetime.fromtimestamp(previous if previous is not None else exchange["time"])
    hours, minutes, seconds = map(int, resume.clock.split(":"))
    at = reference.replace(hour=hours, minute=minutes, second=seconds, microsecond=0)
    if at < reference - timedelta(seconds=1):
        at += timedelta(days=1)
    return datetime.fromtimestamp(exchange["time"]) >= at


# ---------------------------------------------------------------------------------------------------
# Rendering

def _cut(text: str, limit: int = MAX_TEXT) -> str:
    """A third from its start and two from its end (where a log says how it ended), cut at line ends."""
    if len(text) <= limit:
        return text
    head, tail = text[:limit // 3], text[len(text) - 2 * limit // 3:]
    head = head[:head.rfind("\n") + 1] or head
    tail = tail[tail.find("\n") + 1:] or tail
    return f"{head}[... {len(text) - len(head) - len(tail):,} characters not shown ...]\n{tail}"


def _fenced(text: str, language: str = "") -> str:
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}{language}\n{text}\n{fence}"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines()) or ">"


def _call(item: Item) -> str:
    head = f"**Tool call** `{item.name}`"
    arguments = item.arguments
    if not isinstance(arguments, dict):
        return f"{head}\n\n{_fenced(_cut(str(arguments)))}"
    command = arguments.get("command", arguments.get("cmd"))
    if isinstance(command, list):
        command = " ".join(map(str, command))
    parts = [head] + ([_fenced(_cut(command), "bash")] if isinstance(command, str) else [])
    for name, value in arguments.items():
        if isinstance(command, str) and name in ("command", "cmd"):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        long = "\n" in text or len(text) > 100
        parts.append(f"`{name}`:\n\n{_fenced(_cut(text))}" if long else f"`{name}`: `{text}`")
    return "\n\n".join(parts)


def _tokens(tokens: dict | None, estimated: bool) -> str:
    if not tokens:
        return "no tokens"
    parts = [f"{tokens.get('input_tokens', 0):,} in"]
    if tokens.get("cache_read_tokens"):
        parts.append(f"{tokens['cache_read_tokens']:,} cache read")
    if tokens.get("cache_write_tokens"):
        parts.append(f"{tokens['cache_write_tokens']:,} cache write")
    return " + ".join(parts) + f" → {tokens.get('output_tokens', 0):,} out" + (" (estimated)" if estimated else "")


def _observation(text: str) -> tuple[str, str]:
    """A tool result's text and a note; mini-swe-agent's JSON observation read as its command's output."""
    observation = _json(text) if text.startswith("{") else None
    if not isinstance(observation, dict) or "returncode" not in observation:
        return text, ""
    if "output" not in observation:   # its own cut of a long output
        text = (f"{observation.get('output_head', '')}\n[... {observation.get('elided_chars')} characters elided by "
                f"the scaffold ...]\n{observation.get('output_tail', '')}")
    return observation.get("output", text), f", exit code {observation['returncode']}"


@dataclass
class Renderer:
    """What rendering remembers from one exchange to the next."""
    conversations: Conversations = field(default_factory=Conversations)
    tools: dict[str, str] = field(default_factory=dict)   # call id -> tool name, for the results
    seen: set[str] = field(default_factory=set)           # system prompts and tool lists shown already
    requests: int = 0                                     # forwarded upstream (the gateway's count)
    tokens: int = 0
    dollars: float = 0.0

    def item(self, item: Item) -> str:
        if item.kind == "system":
            digest = hashlib.sha256(item.text.encode()).hexdigest()
            if digest in self.seen:
                return "*(the same system prompt as before)*"
            self.seen.add(digest)
            return (f"<details><summary>System prompt ({len(item.text):,} characters)</summary>\n\n"
                    f"{_fenced(_cut(item.text, 4 * MAX_TEXT))}\n\n</details>")
        if item.kind in ("user", "assistant"):
            return f"**{item.kind.capitalize()}**\n\n{_quote(_cut(item.text))}"
        if item.kind == "thinking":
            return f"<details><summary>Thinking</summary>\n\n{_quote(_cut(item.text))}\n\n</details>"
        if item.kind == "call":
            self.tools[item.call_id] = item.name
            return _call(item)
        if item.kind == "result":
            text, note = _observation(item.text)
            return (f"**Tool result** `{self.tools.get(item.call_id, '?')}`{' (error)' if item.error else ''}{note}"
                    f"\n\n{_fenced(_cut(text))}")
        return f"*{item.text}*"

    def exchange(self, number: int, exchange: dict) -> str:
        wire = WIRES[ROUTES[exchange["route"]].kind]
        request = exchange.get("request")
        model = exchange.get("model") or (request.get("model") if isinstance(request, dict) else None)
        out = [f"### {number} · {time.strftime('%H:%M:%S', time.localtime(exchange['time']))} · {model or '?'}"]
        tokens = exchange.get("tokens") or {}
        self.tokens += sum(v for v in tokens.values() if isinstance(v, int))
        self.dollars += exchange.get("dollars") or 0.0
        if exchange.get("refused"):
            out.append(f"**Refused by the gateway** ({exchange['status']}): {exchange['refused']}")
        else:
            self.requests += 1
            out.append(f"*{_tokens(tokens, not exchange.get('usage_reported', True))} · "
                       f"${exchange.get('dollars', 0):.4f} · session so far {self.tokens:,} tokens, "
                       f"${self.dollars:.4f} · {exchange.get('seconds', 0):.1f} s*")
        if exchange.get("attempts"):
            failed = ", ".join(str(a.get("status") or a.get("error", "?"))[:80] for a in exchange["attempts"])
            out.append(f"*after {len(exchange['attempts'])} failed attempt(s): {failed}*")
        if isinstance(request, dict):
            entries, note = self.conversations.new(wire.entries(request), wire,
                                                   bool(request.get("previous_response_id")))
            if note:
                out.append(f"*— {note} —*")
            offered = [t.get("name") or (t.get("function") or {}).get("name") or t.get("type")
                       for t in request.get("tools") or [] if isinstance(t, dict)]
            if offered and (digest := "tools:" + ",".join(map(str, offered))) not in self.seen:
                self.seen.add(digest)
                out.append(f"*Tools offered: {', '.join(f'`{t}`' for t in offered)}*")
            out += [self.item(item) for entry in entries for item in wire.items(entry)]
        response = exchange.get("response")
        if 200 <= exchange.get("status", 0) < 300 and isinstance(response, dict):
            out += [self.item(item) for entry in wire.answer(response) for item in wire.items(entry)]
        elif not exchange.get("refused"):
            error = response.get("error") if isinstance(response, dict) else response
            message = error.get("message", error) if isinstance(error, dict) else error
            out.append(f"**The provider answered HTTP {exchange.get('status')}**: {_cut(str(message), 600)}")
        if exchange.get("error"):
            out.append(f"**The stream broke**: {exchange['error']}")
        return "\n\n".join(out)


def _exchanges(path: Path) -> Iterator[dict | None]:
    """The transcript's exchanges of the conversation routes; None for a line that cannot be read."""
    if not path.exists():
        return
    with open(path, errors="replace") as f:
        for line in f:
            try:
                exchange = json.loads(line)
            except ValueError:
                exchange = None
            if not isinstance(exchange, dict) or not isinstance(exchange.get("time"), (int, float)):
                yield None
            elif ROUTES.get(exchange.get("route", "")) and ROUTES[exchange["route"]].kind in WIRES:
                yield exchange


def _header(folder: Path) -> list[str]:
    record, usage = (_read(folder / name) for name in ("session.json", USAGE_FILE))
    out = [f"# Transcript of session {(record or {}).get('session_id') or folder.resolve().name}"]
    if record:
        out.append(f"Agent `{record.get('agent')}`, ended by {record.get('end_reason') or '-'}, "   # written at collect,
                   f"continued {record.get('resumes', 0)} time(s).")                             # before its status
    if usage:
        tokens = sum(usage.get(k, 0) for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                               "cache_write_tokens"))
        out.append(f"The gateway's totals: {usage.get('requests', 0)} requests, {tokens:,} tokens, "
                   f"${usage.get('dollars', 0.0):.4f}" + (f", stopped at its {usage['stopped']} cap"
                                                           if usage.get("stopped") else "") + ".")
    out.append("Each request shows what it adds to the conversation: the tool results it carries (from the calls "
               "of the answer before it), then the model's answer.")
    return out


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_transcript(folder: Path) -> Path | None:
    """Render <folder>/transcript.md (atomically); None for a session without the gateway (a control)."""
    if not (folder / TRANSCRIPT).exists() and not (folder / USAGE_FILE).exists():
        return None
    log = read_agent_log(folder / AGENT_LOG)
    renderer = Renderer()
    pending, previous, unreadable, number = list(log.resumes), None, 0, 0
    out = _header(folder) + ["## The agent's first run"]
    events = log.first_events
    for exchange in _exchanges(folder / TRANSCRIPT):
        if exchange is None:
            unreadable += 1
            continue
        while pending and _due(pending[0], exchange, renderer.requests, previous):
            out += events + [f"## Continued ({pending[0].number})", f"`{pending[0].line}`"]
            events = pending.pop(0).cli_events
        number += 1
        try:
            out.append(renderer.exchange(number, exchange))
        except Exception as e:       # a shape not foreseen: say so, and go on with the rest
            out.append(f"### {number}\n\n*(not rendered: {type(e).__name__}: {e})*")
        previous = exchange["time"]
    if number == 0:
        out.append("*No model request.*")
    for resume in pending:
        out += events + [f"## Continued ({resume.number})", f"`{resume.line}`", "*No model request.*"]
        events = resume.cli_events
    out += events + ["## End"] + [f"`{line}`" for line in log.notes]
    out.append(f"{renderer.requests} requests forwarded, {renderer.tokens:,} tokens, ${renderer.dollars:.4f}.")
    if unreadable:
        out.append(f"*{unreadable} line(s) of {TRANSCRIPT} could not be read.*")
    atomic_write_bytes(folder / TRANSCRIPT_MD, ("\n\n".join(out) + "\n").encode())
    return folder / TRANSCRIPT_MD
