"""transcript.md from transcripts the real gateway wrote in front of the scripted model server, for each wire format:
a client that keeps its conversation the way the CLIs do (history re-sent, tool results in the next request) runs
to a text answer, is continued (in its own conversation, or afresh), meets a provider error, and is stopped by its
dollar cap."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from harness.gateway.sse import SSEParser
from harness.gateway.usage import GatewayBudget
from harness.gateway.wire import REASSEMBLERS
from harness.transcript import TRANSCRIPT_MD, write_transcript

APIS = {"messages": "/v1/messages", "responses": "/v1/responses", "chat": "/v1/chat/completions"}
MODEL = {"messages": "scripted-claude", "responses": "scripted-gpt", "chat": "scripted-gpt"}
DOLLARS = {"messages": 0.0041, "responses": 0.0051, "chat": 0.0051}   # per turn, as in tests/harness/test_gateway.py
USAGE = {"input_tokens": 1000, "output_tokens": 200, "cache_read_tokens": 3000, "cache_write_tokens": 400}
SYSTEM = "You are a careful research agent."
START = "Have a look at program.md and let's kick off a new experiment."
CONTINUE = "You stopped, but your budget is not spent: continue."
LONG_OUTPUT = "".join(f"step {i:05d} loss 3.{i % 1000:03d}\n" for i in range(600)) + "val_bpb: 1.234567\n"
TRAIN = "python train.py > run.log 2>&1\ngrep '^val_bpb:' run.log"


def bash(command: str) -> list[dict]:
    return [{"name": "bash", "arguments": {"command": command}}]


SCRIPT = {"turns": [
    {"text": "I will read train.py first.", "tool_calls": bash("cat train.py"), "usage": USAGE},
    {"text": "Now the baseline.", "tool_calls": bash(TRAIN), "usage": USAGE, "faults": [{"status": 500}]},
    {"text": "Baseline done: 1.234567.", "usage": USAGE},
    {"text": "Back to it.", "tool_calls": bash("git log --oneline"), "usage": USAGE, "faults": [{"status": 400}]},
    {"text": "Still going.", "usage": USAGE},
    {"text": "never reached", "usage": USAGE},
]}
OUTPUTS = {"cat train.py": LONG_OUTPUT, TRAIN: "val_bpb: 1.234567", "git log --oneline": "abc1234 baseline"}


class Client:
    """A CLI's conversation on one wire: it re-sends everything, the model's answer and the tool results included."""

    def __init__(self, api: str, url: str, token: str):
        self.api, self.url, self.token = api, url, token
        self.entries: list = []
        self.start()

    def start(self, prompt: str = START) -> None:
        if self.api == "chat":
            self.entries = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        else:
            self.entries = [{"role": "user", "content": [{"type": "text" if self.api == "messages" else "input_text",
                                                          "text": prompt}]}]

    def say(self, text: str) -> None:
        kind = {"messages": "text", "responses": "input_text"}.get(self.api)
        self.entries.append({"role": "user", "content": [{"type": kind, "text": text}] if kind else text})

    def body(self, stream: bool) -> dict:
        body = {"model": MODEL[self.api], "stream": stream}
        if self.api == "messages":
            # a cache marker on the last block of the last message, moved each turn; litellm (mini-swe-agent) also
            # turns a marked tool result's text into a text block
            messages = json.loads(json.dumps(self.entries))
            last = messages[-1]["content"][-1]
            if isinstance(last.get("content"), str):
                last["content"] = [{"type": "text", "text": last["content"]}]
            last["cache_control"] = {"type": "ephemeral"}
            return body | {"system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
                           "messages": messages, "max_tokens": 1024,
                           "tools": [{"name": "bash", "input_schema": {"type": "object"}}]}
        if self.api == "responses":
            return body | {"instructions": SYSTEM, "input": self.entries, "store": False,
                           "tools": [{"type": "function", "name": "bash", "parameters": {}}]}
        return body | {"messages": self.entries, "stream_options": {"include_usage": True} if stream else None,
                       "tools": [{"type": "function", "function": {"name": "bash", "parameters": {}}}]}

    def send(self, stream: bool = False) -> httpx.Response:
        headers = ({"x-api-key": self.token, "anthropic-version": "2023-06-01"} if self.api == "messages"
                   else {"authorization": f"Bearer {self.token}"})
        with httpx.Client(base_url=self.url, timeout=30) as client:
            return client.post(APIS[self.api], json=self.body(stream), headers=headers)

    def turn(self, stream: bool = False) -> bool:
        """One request, its answer and tool calls run; False when the answer was text only (the CLI's end)."""
        response = self.send(stream)
        assert response.status_code == 200, response.text
        if stream:
            assembler = REASSEMBLERS[{"/v1/messages": "messages", "/v1/responses": "responses"}.get(
                APIS[self.api], "chat")]()
            for event in SSEParser().feed(response.content):
                assembler.feed(event)
            answer = assembler.result()
        else:
            answer = response.json()
        calls = self.record(answer)
        for call_id, command in calls:
            self.result(call_id, OUTPUTS[command])
        return bool(calls)

    def record(self, answer: dict) -> list[tuple[str, str]]:
        if self.api == "messages":
            self.entries.append({"role": "assistant", "content": answer["content"]})
            return [(b["id"], b["input"]["command"]) for b in answer["content"] if b["type"] == "tool_use"]
        if self.api == "responses":
            self.entries += answer["output"]
            return [(o["call_id"], json.loads(o["arguments"])["command"]) for o in answer["output"]
                    if o["type"] == "function_call"]
        message = answer["choices"][0]["message"]
        self.entries.append({"role": "assistant", "content": message.get("content"),
                             "tool_calls": message.get("tool_calls")})
        return [(c["id"], json.loads(c["function"]["arguments"])["command"]) for c in message.get("tool_calls") or []]

    def result(self, call_id: str, output: str) -> None:
        if self.api == "messages":
            block = {"type": "tool_result", "tool_use_id": call_id, "content": output}
            if self.entries[-1]["role"] == "user":
                self.entries[-1]["content"].append(block)
            else:
                self.entries.append({"role": "user", "content": [block]})
        elif self.api == "responses":
            self.entries.append({"type": "function_call_output", "call_id": call_id, "output": output})
        else:
            self.entries.append({"role": "tool", "tool_call_id": call_id, "content": output})


def run_session(model_gateway, folder: Path, api: str) -> str:
    """The scripted session of the module docstring; returns transcript.md's text."""
    model_gateway.scripted.load(SCRIPT)
    budget = GatewayBudget(dollars=5 * DOLLARS[api] - 1e-9)   # reached by the fifth answer
    grant = model_gateway.gateway.open_session(f"transcript-{api}", folder, budget)
    client = Client(api, grant.tcp_url, grant.token)
    assert client.turn(stream=True) and client.turn() and not client.turn()
    if api == "chat":          # a scaffold without resume starts afresh, told to continue
        client.start(START + "\n\n" + CONTINUE)
    else:                      # a CLI that resumes its conversation
        client.say(CONTINUE)
    assert client.send().status_code == 400                    # the scripted provider's 400, passed through
    assert client.turn(stream=True) and not client.turn()
    client.say("Go on.")
    assert client.send().status_code in (402, 429)             # the dollar cap
    model_gateway.gateway.close_session(f"transcript-{api}")
    (folder / "agent.log").write_text(
        "starting up (not JSON)\n"
        '{"type":"system","subtype":"init","session_id":"abc"}\n'
        '{"type":"result","subtype":"success","num_turns":3,"result":"Baseline done: 1.234567."}\n'
        "\n[arbench] 12:00:05 resume 1 after 3 model requests: the agent exited after 30 s with 200 s of its "
        "budget left; continued with the continue prompt\n"
        '{"type":"turn.failed","error":{"message":"quota exceeded"}}\n'
        "\n[arbench] 12:01:00 session stopped: the session reached its dollars cap\n")
    path = write_transcript(folder)
    assert path == folder / TRANSCRIPT_MD
    return path.read_text()


@pytest.mark.parametrize("api", list(APIS))
def test_a_session_reads_in_order_once(model_gateway, tmp_path, api):
    md = run_session(model_gateway, tmp_path, api)
    usage = json.loads((tmp_path / "usage.json").read_text())
    assert usage["requests"] == 6 and usage["dollars"] == pytest.approx(5 * DOLLARS[api])

    # in order: the answers, the continue between the third and the fourth, the CLI's notes where they were said
    order = ["I will read train.py first.", "cat train.py", "Now the baseline.", "grep '^val_bpb:' run.log",
             "Baseline done: 1.234567.", "**The CLI's result** (success, 3 turns)", "## Continued (1)",
             "resume 1 after 3 model requests", CONTINUE, "HTTP 400", "Back to it.", "git log --oneline",
             "abc1234 baseline", "Still going.", "Refused by the gateway", "quota exceeded", "## End",
             "session stopped: the session reached its dollars cap"]
    positions = [md.find(text) for text in order]
    assert -1 not in positions, [t for t, p in zip(order, positions) if p == -1]
    assert positions == sorted(positions)

    # each thing once, though every request repeats the conversation
    assert md.count(START) == (2 if api == "chat" else 1)     # a fresh conversation repeats its task
    assert md.count(SYSTEM) == 1 and md.count("I will read train.py first.") == 1
    assert md.count("abc1234 baseline") == 1 and md.count("val_bpb: 1.234567") == 2   # the long output's tail, the run
    if api == "chat":
        assert "a new conversation, with the same system prompt" in md
    else:
        assert "new conversation" not in md and "begins like an earlier one" not in md
    assert "not JSON" not in md and "never reached" not in md

    # the long output is cut in the middle, its end kept; results are named by their call
    assert "characters not shown ...]\nstep 00" in md and "step 00000" in md and "step 00300" not in md
    assert md.count("**Tool result** `bash`") == 3

    # tokens and dollars per exchange and running totals; the failed attempt and the refusal
    per_turn = "1,000 in + 3,000 cache read" + (" + 400 cache write" if api == "messages" else "") + " → 200 out"
    assert md.count(f"{per_turn} · ${DOLLARS[api]:.4f} · session so far") == 5
    assert f"${5 * DOLLARS[api]:.4f}." in md.split("## End")[1]
    assert f"6 requests, {5 * (4600 if api == 'messages' else 4200):,} tokens, ${5 * DOLLARS[api]:.4f}" in md
    assert "after 1 failed attempt(s): 500" in md
    assert "Tools offered: `bash`" in md and md.count("Tools offered") == 1
    for key in model_gateway.keys.values():
        assert key not in md


def test_no_gateway_session_no_transcript(tmp_path):
    (tmp_path / "agent.log").write_text("a control's output\n")
    assert write_transcript(tmp_path) is None and not (tmp_path / TRANSCRIPT_MD).exists()


def test_a_continue_without_a_request_count_is_placed_by_its_clock(tmp_path):
    """An agent.log whose resume line gives only a clock time: the continue goes before the first request made at or
    after it, a day later when the clock went past midnight."""
    import time as clock
    base = clock.mktime((2026, 12, 1, 23, 59, 50, 0, 0, -1))
    lines = []
    for i, at in enumerate((base, base + 5, base + 20)):   # 23:59:50, 23:59:55, 00:00:10 the next day
        request = {"model": "scripted-gpt", "messages": [{"role": "user", "content": f"question {i}"}]}
        response = {"choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}]}
        lines.append(json.dumps({"route": "/v1/chat/completions", "request": request, "status": 200,
                                 "response": response, "time": at, "seconds": 1.0, "model": "scripted-gpt",
                                 "tokens": {"input_tokens": 10, "output_tokens": 2}, "dollars": 0.001}))
    (tmp_path / "transcript.jsonl").write_text("\n".join(lines) + "\nnot json\n")
    (tmp_path / "agent.log").write_text("[arbench] 00:00:01 resume 1: the agent exited\n")
    md = write_transcript(tmp_path).read_text()
    assert md.index("answer 1") < md.index("## Continued (1)") < md.index("answer 2")
    assert md.count("a new conversation") == 2 and "1 line(s) of transcript.jsonl could not be read" in md
