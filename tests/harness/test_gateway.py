"""The LLM gateway as a real process in front of the scripted model server (a real server too): pass-through,
metering, transcripts, tokens, keys, caps, retries and outages; and bench/forward.py in front of its socket."""

from __future__ import annotations

import itertools
import json
import os
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness.gateway.client import Gateway, GatewayError
from harness.gateway.prices import UnknownModel, price_of
from harness.gateway.scripted import ScriptedServer
from harness.gateway.sse import SSEParser
from harness.gateway.upstream import RetryPolicy
from harness.gateway.usage import GatewayBudget

KEYS = {"anthropic": "sk-ant-test-NEVER-LEAK-4f1c9e", "openai": "sk-test-NEVER-LEAK-openai-77a2"}
FAST = RetryPolicy(base_s=0.01, max_s=0.05, outage_limit_s=1.5, timeout_s=0.5)
TURN = {"text": "I will read train.py, then try a wider model.",
        "tool_calls": [{"name": "bash", "arguments": {"command": "cat train.py", "timeout": 30}}],
        "usage": {"input_tokens": 1000, "output_tokens": 200, "cache_read_tokens": 3000, "cache_write_tokens": 400}}
# by hand, from prices.toml (USD per million tokens):
#   scripted-claude  1000 x 1.0 + 200 x 10.0 + 3000 x 0.1 + 400 x 2.0 = 4100         -> $0.0041
#   scripted-gpt     1000 x 2.0 + 200 x 8.0  + 3000 x 0.5 (OpenAI reports no cache writes) = 5100 -> $0.0051
DOLLARS = {"messages": 0.0041, "responses": 0.0051, "chat": 0.0051}
APIS = {"messages": "/v1/messages?beta=true", "responses": "/v1/responses", "chat": "/v1/chat/completions"}
_ids = itertools.count()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="module")
def scripted(root):
    with ScriptedServer.start(log=root / "scripted.log") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(root, scripted):
    keys_file = root / "keys.env"
    keys_file.write_text(f"ANTHROPIC_API_KEY={KEYS['anthropic']}\nexport OPENAI_API_KEY='{KEYS['openai']}'\n")
    upstreams = {"anthropic": scripted.url, "openai": scripted.url}
    with Gateway.start(root / "out" / "state", upstreams, keys_file, retry=FAST) as gw:
        yield gw


def open_session(gateway: Gateway, root: Path, budget=GatewayBudget()):
    session_id = f"s{next(_ids)}"
    folder = root / "out" / "sessions" / session_id
    return session_id, folder, gateway.open_session(session_id, folder, budget)


def request_for(api: str, stream: bool, model: str | None = None) -> bytes:
    """A body with a field no API has yet: pass-through must keep it. Indented: bytes, not just JSON, must match."""
    if api == "messages":
        body = {"model": model or "scripted-claude", "max_tokens": 256, "messages": [{"role": "user", "content": "go"}]}
    elif api == "responses":
        body = {"model": model or "scripted-gpt", "input": [{"role": "user", "content": "go"}]}
    else:
        body = {"model": model or "scripted-gpt", "messages": [{"role": "user", "content": "go"}]}
        if stream:
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body | {"stream": stream, "feature_from_the_future": {"x": 1}}, indent=1).encode()


def headers_for(api: str, token: str | None) -> dict:
    if api == "messages":
        return {"anthropic-version": "2023-06-01", "anthropic-beta": "future-feature-2026-01-01",
                "content-type": "application/json", **({"x-api-key": token} if token else {})}
    return {"content-type": "application/json", "openai-beta": "future",
            **({"authorization": f"Bearer {token}"} if token else {})}


def call(url: str, api: str, token: str | None, stream: bool = False, body: bytes | None = None) -> httpx.Response:
    body = body if body is not None else request_for(api, stream)
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.post(APIS[api], content=body, headers=headers_for(api, token))
        response.read()
        return response


def transcript(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "transcript.jsonl").read_text().splitlines()]


def reassembled_text_and_call(api: str, record: dict) -> tuple[str, dict]:
    """The turn's text and first tool call's arguments, from a transcript's (reassembled) response."""
    if api == "messages":
        blocks = record["content"]
        return blocks[0]["text"], blocks[1]["input"]
    if api == "responses":
        output = record["output"]
        return output[0]["content"][0]["text"], json.loads(output[1]["arguments"])
    message = record["choices"][0]["message"]
    return message["content"], json.loads(message["tool_calls"][0]["function"]["arguments"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", list(APIS))
def test_each_api_is_forwarded_unchanged_metered_and_recorded(gateway, scripted, root, api, stream):
    scripted.load({"turns": [TURN]})
    session_id, folder, grant = open_session(gateway, root)
    body = request_for(api, stream)
    response = call(grant.tcp_url, api, grant.token, stream, body)

    assert response.status_code == 200, response.text
    [seen] = scripted.received()
    assert seen["body"] == body.decode() and seen["path"] == APIS[api].split("?")[0]
    assert seen["query"] == ("beta=true" if api == "messages" else "")
    if api == "messages":
        assert seen["headers"]["x-api-key"] == KEYS["anthropic"] and "authorization" not in seen["headers"]
        assert seen["headers"]["anthropic-beta"] == "future-feature-2026-01-01"
    else:
        assert seen["headers"]["authorization"] == f"Bearer {KEYS['openai']}"
        assert seen["headers"]["openai-beta"] == "future"
    assert response.content == seen["response"].encode()           # the agent got exactly what was sent
    assert response.headers["content-type"].startswith("text/event-stream" if stream else "application/json")

    usage = gateway.usage(session_id)
    assert (usage.requests, usage.retries, usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == \
        (1, 0, 1000, 200, 3000)
    assert usage.cache_write_tokens == (400 if api == "messages" else 0)
    assert usage.dollars == pytest.approx(DOLLARS[api], abs=1e-12) and usage.estimated == 0

    assert gateway.close_session(session_id) == usage
    [line] = transcript(folder)
    assert line["route"] == APIS[api].split("?")[0] and line["status"] == 200 and line["model"] in body.decode()
    assert line["request"] == json.loads(body) and line["dollars"] == pytest.approx(DOLLARS[api], abs=1e-12)
    assert line["events"] == (len(SSEParser().feed(response.content)) if stream else None)
    assert reassembled_text_and_call(api, line["response"]) == (TURN["text"], TURN["tool_calls"][0]["arguments"])
    assert "x-api-key" not in json.dumps(line) and "authorization" not in json.dumps(line).lower()
    assert json.loads((folder / "usage.json").read_text())["dollars"] == pytest.approx(DOLLARS[api], abs=1e-12)


def test_a_chat_stream_without_usage_is_estimated_and_flagged(gateway, scripted, root):
    scripted.load({"turns": [TURN]})
    session_id, folder, grant = open_session(gateway, root)
    body = json.dumps({"model": "scripted-gpt", "messages": [], "stream": True}).encode()   # no include_usage
    assert call(grant.tcp_url, "chat", grant.token, True, body).status_code == 200
    usage = gateway.close_session(session_id)
    assert usage.estimated == 1 and usage.input_tokens == len(body) // 4 and usage.output_tokens > 0
    assert usage.dollars > 0
    [line] = transcript(folder)
    assert line["usage_reported"] is False and line["response"]["choices"][0]["message"]["content"] == TURN["text"]


def test_count_tokens_and_models_pass_through_unmetered(gateway, scripted, root):
    scripted.load({"turns": [], "models": ["scripted-claude"]})
    session_id, _, grant = open_session(gateway, root)
    with httpx.Client(base_url=grant.tcp_url) as client:
        counted = client.post("/v1/messages/count_tokens", content=b'{"model":"scripted-claude","messages":[]}',
                              headers={"x-api-key": grant.token, "anthropic-version": "2023-06-01"})
        anthropic_models = client.get("/v1/models", headers=headers_for("messages", grant.token))
        openai_models = client.get("/v1/models", headers={"authorization": f"Bearer {grant.token}"})
    assert counted.json() == {"input_tokens": 10}
    assert anthropic_models.json()["data"][0]["type"] == "model"
    assert openai_models.json()["object"] == "list"
    assert [r["headers"].get("x-api-key") for r in scripted.received()] == [KEYS["anthropic"], KEYS["anthropic"], None]
    usage = gateway.close_session(session_id)
    assert usage.requests == 3 and usage.dollars == 0 and usage.tokens == 0


def test_missing_forged_and_closed_tokens_are_refused_in_each_apis_format(gateway, scripted, root):
    scripted.load({"turns": [TURN] * 3})
    closed_id, _, closed = open_session(gateway, root)
    open_id, _, alive = open_session(gateway, root)
    assert call(closed.tcp_url, "messages", closed.token).status_code == 200
    gateway.close_session(closed_id)
    for token in (None, "forged-" + alive.token[7:], closed.token, KEYS["anthropic"]):
        refused = call(alive.tcp_url, "messages", token)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        refused = call(alive.tcp_url, "responses", token)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert len(scripted.received()) == 1                    # none of them went upstream
    assert gateway.usage(open_id).requests == 0 and gateway.usage(closed_id).requests == 1
    assert call(alive.tcp_url, "responses", alive.token).status_code == 200
    with pytest.raises(GatewayError, match="already open"):
        gateway.open_session(open_id, root / "again", GatewayBudget())


def test_an_unpriced_model_is_refused_not_metered_at_zero(gateway, scripted, root):
    scripted.load({"turns": [TURN]})
    session_id, folder, grant = open_session(gateway, root)
    refused = call(grant.tcp_url, "messages", grant.token, body=request_for("messages", False, "claude-unpriced-9"))
    assert refused.status_code == 400 and "no price" in refused.json()["error"]["message"]
    assert scripted.received() == [] and gateway.close_session(session_id).requests == 0
    assert transcript(folder)[0]["refused"].startswith("model 'claude-unpriced-9' has no price")
    with pytest.raises(UnknownModel, match="gpt-unpriced"):
        price_of("gpt-unpriced")
    assert price_of("claude-haiku-4-5-20251001") == price_of("claude-haiku-4-5")   # a dated snapshot of a priced id


@pytest.mark.parametrize("api, budget, reason", [("messages", GatewayBudget(dollars=0.006), "dollars"),
                                                 ("responses", GatewayBudget(tokens=8000), "tokens")])
def test_a_cap_stops_the_session_and_refuses_the_next_request(gateway, scripted, root, api, budget, reason):
    scripted.load({"turns": [TURN] * 5})    # $0.0041 a Claude turn, 4200 tokens an OpenAI one: the 2nd reaches the cap
    session_id, folder, grant = open_session(gateway, root, budget)
    assert call(grant.tcp_url, api, grant.token).status_code == 200
    assert gateway.usage(session_id).stopped is None
    assert call(grant.tcp_url, api, grant.token, stream=True).status_code == 200
    assert gateway.usage(session_id).stopped == reason      # set as soon as the cap is reached
    refused = call(grant.tcp_url, api, grant.token)
    assert refused.status_code == (402 if api == "messages" else 429) and refused.headers["x-should-retry"] == "false"
    error = refused.json()["error"]
    assert error["type"] == ("billing_error" if api == "messages" else "insufficient_quota")
    assert len(scripted.received()) == 2
    usage = gateway.close_session(session_id)
    assert usage.requests == 2 and usage.stopped == reason
    assert transcript(folder)[-1]["refused"].endswith(f"reached its {reason} cap ({getattr(budget, reason):g})")
    zero_id, _, zero = open_session(gateway, root, GatewayBudget(**{reason: 0}))     # a zero cap: nothing goes
    assert call(zero.tcp_url, api, zero.token).status_code == refused.status_code
    assert gateway.usage(zero_id).stopped == reason
    assert len(scripted.received()) == 2


def test_429_with_retry_after_a_500_burst_and_a_stall_are_retried_and_recorded(gateway, scripted, root):
    scripted.load({"turns": [TURN | {"faults": [{"status": 429, "retry_after": "1"}]},
                             TURN | {"faults": [{"status": 500, "times": 3}]},
                             TURN | {"faults": [{"stall_s": 2.0}]}]})
    session_id, folder, grant = open_session(gateway, root)
    started = time.monotonic()
    assert call(grant.tcp_url, "messages", grant.token).status_code == 200
    assert time.monotonic() - started >= 1.0                 # retry-after honoured
    assert call(grant.tcp_url, "responses", grant.token, stream=True).status_code == 200
    assert call(grant.tcp_url, "chat", grant.token).status_code == 200
    usage = gateway.close_session(session_id)
    assert usage.retries == 5 and usage.requests == 3 and usage.infra_error is None
    assert usage.dollars == pytest.approx(DOLLARS["messages"] + DOLLARS["responses"] + DOLLARS["chat"], abs=1e-12)
    first, burst, stall = (line["attempts"] for line in transcript(folder))
    assert [(a["status"], a["wait_s"]) for a in first] == [(429, 1.0)]
    assert [a["status"] for a in burst] == [500, 500, 500] and "scripted fault" in burst[0]["error"]
    assert [a["status"] for a in stall] == [None] and "Timeout" in stall[0]["error"]


def test_an_outage_past_the_limit_ends_the_session_as_infra_error(gateway, scripted, root):
    scripted.load({"turns": [TURN | {"faults": [{"status": 503, "times": 10_000}]}]})
    session_id, folder, grant = open_session(gateway, root)
    started = time.monotonic()
    failed = call(grant.tcp_url, "messages", grant.token)
    assert failed.status_code == 502 and failed.json()["error"]["type"] == "api_error"
    assert FAST.outage_limit_s - 0.2 <= time.monotonic() - started < FAST.outage_limit_s + 2
    usage = gateway.usage(session_id)
    assert "outage limit" in usage.infra_error and usage.retries > 5 and usage.requests == 0
    upstream_calls = len(scripted.received())
    again = call(grant.tcp_url, "responses", grant.token)    # the session is over: refused at once
    assert again.status_code == 502 and again.json()["error"]["type"] == "server_error"
    assert len(scripted.received()) == upstream_calls
    assert len(transcript(folder)) == 2

    scripted.load({"turns": [TURN | {"faults": [{"status": 429, "retry_after": "3600"}]}]})
    session_id, _, grant = open_session(gateway, root)
    started = time.monotonic()
    assert call(grant.tcp_url, "chat", grant.token).status_code == 502     # an hour's retry-after: over the limit now
    assert time.monotonic() - started < 1.0 and gateway.usage(session_id).infra_error


def test_the_agents_socket_serves_the_api_and_the_admin_socket_is_private(gateway, scripted, root):
    scripted.load({"turns": [TURN]})
    session_id, _, grant = open_session(gateway, root)
    admin = gateway.socket_path.parent.parent / "admin" / "admin.sock"
    assert stat.S_IMODE(os.stat(admin).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(admin.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(grant.socket_path).st_mode) == 0o666
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(grant.socket_path)), base_url="http://gateway") as client:
        answer = client.post("/v1/messages", content=request_for("messages", False),
                             headers=headers_for("messages", grant.token))
        assert answer.status_code == 200
        assert client.get(f"/sessions/{session_id}").status_code == 404      # no admin route on the agents' side
    assert httpx.get(f"{grant.tcp_url}/sessions/{session_id}").status_code == 404


def test_the_loopback_forwarder_reaches_the_gateways_socket_streams_included(gateway, scripted, root):
    scripted.load({"turns": [TURN] * 2})
    session_id, _, grant = open_session(gateway, root)
    forwarder = subprocess.Popen([sys.executable, "-m", "bench.forward", "--listen", "127.0.0.1:0",
                                  "--socket", str(grant.socket_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert select.select([forwarder.stdout], [], [], 10)[0], "the forwarder did not start"
        port = int(forwarder.stdout.readline().split()[1].rsplit(":", 1)[1])
        url = f"http://127.0.0.1:{port}"
        whole = call(url, "messages", grant.token)
        assert whole.json()["content"][0]["text"] == TURN["text"]
        assert len(whole.headers.get_list("date")) == 1 and whole.headers["server"] == "uvicorn"   # the upstream's
        streamed = call(url, "responses", grant.token, stream=True)
        assert streamed.status_code == 200 and streamed.content == scripted.received()[-1]["response"].encode()
    finally:
        forwarder.terminate()
        forwarder.wait(10)
    assert gateway.usage(session_id).requests == 2


def test_no_provider_key_is_ever_returned_or_written(gateway, scripted, root):
    """Even an upstream that echoes its key (as a provider's 401 may): the agent and the files see it redacted
    (a key split across a stream's deltas is not recognised in them; a model never sees the key to echo it).
    Runs last in this module: its scan covers every file the gateway wrote for the tests above."""
    scripted.load({"turns": [{"text": f"your key is {KEYS['anthropic']}"}, {"text": f"and {KEYS['openai']}"},
                             {"text": f"again {KEYS['openai']}"}]})
    session_id, _, grant = open_session(gateway, root)
    answers = [call(grant.tcp_url, "messages", grant.token), call(grant.tcp_url, "chat", grant.token),
               call(grant.tcp_url, "responses", grant.token, stream=True)]   # response.completed has the whole text
    gateway.close_session(session_id)
    assert KEYS["anthropic"] in scripted.received()[0]["response"]      # the upstream did send it...
    for answer in answers:
        assert answer.status_code == 200 and b"[redacted]" in answer.content
        assert not any(key.encode() in answer.content or key in str(answer.headers) for key in KEYS.values())
    written = [p for p in (root / "out").rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"gateway.log", "transcript.jsonl", "usage.json"}
    for path in written:
        content = path.read_bytes()
        assert not any(key.encode() in content for key in KEYS.values()), path


def test_the_gateway_stops_cleanly_and_says_why_it_cannot_start(tmp_path):
    with Gateway.start(tmp_path / "state") as gw:
        gw.open_session("only", tmp_path / "only", GatewayBudget(dollars=1.0))
        sockets = gw.socket_path.parent.parent
    assert gw.process.returncode == 0 and not sockets.exists()
    assert "stopped" in (tmp_path / "state" / "gateway.log").read_text()
    assert json.loads((tmp_path / "only" / "usage.json").read_text())["requests"] == 0
    bad = tmp_path / "prices.toml"
    bad.write_text('as_of = "2026-01-01"\n[models.x]\ninput = 1.0\n')
    with pytest.raises(GatewayError, match="needs exactly"):
        Gateway.start(tmp_path / "bad", prices=bad)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_arbench_gateway_and_everything_it_started(tmp_path):
    """`kill` (or a scheduler's cancel) on `arbench gateway --scripted` leaves no gateway or scripted server behind."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"turns": [{"text": "hi"}]}))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "gateway", "--scripted", str(script),
                             "--state-dir", str(tmp_path / "gw")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().startswith("gateway http"), proc.stderr.read()
        started = _descendants(proc.pid)
        assert len(started) >= 2   # the gateway and the scripted server
        proc.terminate()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(map(_alive, started)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, started)), [Path(f"/proc/{p}/cmdline").read_bytes() for p in started if _alive(p)]
    finally:
        proc.kill()
