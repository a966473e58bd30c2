"""The LLM gateway: a host process between the agents and the model providers. It holds the provider keys (the
agents get per-session tokens), passes requests through unchanged but for authentication, meters every exchange
into dollars from a dated price table, stops a session at its dollar or token cap, retries provider errors, and
writes each session's transcript. The harness starts and stops it with client.Gateway.

    client.py     Gateway (start / open_session / usage / close_session / stop), SessionGrant, GatewayError
    server.py     `python -m harness.gateway serve`: the process, its sockets and the admin API
    proxy.py      the agents' routes: token, refusals, forwarding, stream relay, metering (status codes chosen)
    upstream.py   provider keys, the httpx client, retries with backoff and retry-after, the outage limit
    sessions.py   sessions by token, caps, and the writer of transcript.jsonl and usage.json
    wire.py       the APIs' routes, error bodies, usage fields and stream reassembly
    sse.py        server-sent events: encode and parse
    usage.py      Tokens, Usage, GatewayBudget
    prices.py     the price table (prices.toml) and UnknownModel
    script.py     the scripted model server's script format and its rendering in each API
    scripted.py   the scripted model server (tests, `make bench`, `arbench gateway --scripted FILE`)

Not covered here: starting it for a run, mounting its socket into containers (bench/forward.py is the loopback
forwarder inside), stopping sessions at their caps (the harness polls Usage.stopped / Usage.infra_error)."""
