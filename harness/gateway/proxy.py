"""The agents' side of the gateway: the provider routes (wire.ROUTES) as one starlette app. For each request:
the session from its token (`x-api-key`, or `Authorization: Bearer`, as the CLIs send it); a refusal when the
session is closed, past a cap or ended by an outage, or when the model is not priced; otherwise the request goes
upstream unchanged but for its authentication, and the answer comes back as it came (a stream byte for byte),
metered from the provider's usage fields and recorded in the session's transcript. Caps are checked before each
request, as the cost of an answer is known only once it is given: the request that reaches a cap completes (so do
those in flight beside it), and Usage.stopped is set at once for the harness to end the session.

Status codes of the gateway's own answers, in the API's error format and with `x-should-retry: false` (honoured
by the Anthropic and OpenAI SDKs):
  401  unknown, forged, closed or missing session token (authentication_error / invalid_api_key)
  402 / 429  the session reached its dollar or token cap: each provider's own answer to an account out of credit,
       which its CLI understands and does not retry: Anthropic 402 billing_error (Claude Code stops at once),
       OpenAI 429 insufficient_quota (Codex stops at once: "Quota exceeded"; the OpenAI SDKs would retry a 429 but
       for x-should-retry). Tried with Claude Code 2.1.328 and Codex 0.169.0; Codex retries a 402 five times.
  400  the model has no price in the table (invalid_request_error)
  502  the upstream outage outlasted the limit (api_error / server_error); the session is over (infra_error)
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route as Endpoint

from harness.gateway.prices import Price, PriceTable, UnknownModel
from harness.gateway.sessions import Exchange, Registry, Session
from harness.gateway.sse import SSEParser
from harness.gateway.upstream import Outage, Upstream, is_stream
from harness.gateway.wire import REASSEMBLERS, ROUTES, ErrorKind, Provider, Reassembler, Route, error_body, \
    estimate, usage_of

NOT_RETURNED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"})
CAP_STATUS: dict[Provider, int] = {"anthropic": 402, "openai": 429}


def token_of(headers) -> str | None:
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def provider_of(route: Route | None, request: Request) -> Provider:
    if route is not None and route.provider is not None:
        return route.provider
    return "anthropic" if "anthropic-version" in request.headers else "openai"


def model_of(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get("model") if isinstance(value, dict) and isinstance(value.get("model"), str) else None


def refusal(provider: Provider, status: int, kind: ErrorKind, message: str) -> JSONResponse:
    return JSONResponse(error_body(provider, kind, message), status, headers={"x-should-retry": "false"})


class Proxy:
    def __init__(self, registry: Registry, upstream: Upstream, prices: PriceTable, log: Callable[[str], None]):
        self.registry, self.upstream, self.prices, self.log = registry, upstream, prices, log

    def app(self) -> Starlette:
        routes = [Endpoint(path, self.handle, methods=["GET"] if r.kind == "models" else ["POST"])
                  for path, r in ROUTES.items()]
        anything = Endpoint("/{rest:path}", self.unknown, methods=["GET", "POST", "PUT", "DELETE"])
        return Starlette(routes=routes + [anything])

    async def unknown(self, request: Request) -> Response:
        self.log(f"no route for {request.method} {request.url.path}")
        return refusal(provider_of(None, request), 404, "bad_request", f"the gateway does not serve {request.url.path}")

    async def handle(self, request: Request) -> Response:
        route = ROUTES[request.url.path]
        provider = provider_of(route, request)
        session = self.registry.by_token(token_of(request.headers))
        if session is None:
            self.log(f"refused {request.method} {request.url.path}: unknown, closed or missing session token")
            return refusal(provider, 401, "auth", "unknown, closed or missing session token")
        body = await request.body()
        exchange = Exchange(route=request.url.path, request=body, status=0, response=None)
        if why := session.refusal():
            status, kind = (502, "upstream") if session.usage.infra_error else (CAP_STATUS[provider], "budget")
            return self.refuse(session, exchange, refusal(provider, status, kind, why), why)
        price = None
        if route.metered:
            exchange.model = model_of(body)
            try:
                price = self.prices.price_of(exchange.model or "")
            except UnknownModel as e:
                return self.refuse(session, exchange, refusal(provider, 400, "bad_request", str(e)), str(e))
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        started = time.monotonic()
        try:
            response = await self.upstream.send(self.upstream.request(provider, request.method, path, request.headers,
                                                                      body), exchange.attempts)
        except Outage as e:
            session.fail(str(e), len(exchange.attempts))
            self.log(f"session {session.session_id}: {e}")
            return self.refuse(session, exchange, refusal(provider, 502, "upstream", str(e)), str(e))
        headers = {k: v for k, v in response.headers.items() if k.lower() not in NOT_RETURNED}
        if is_stream(response):
            return StreamingResponse(self.relay(session, exchange, route, price, response, started),
                                     status_code=response.status_code, headers=headers)
        content = self.upstream.redact(response.content)
        exchange.status, exchange.response = response.status_code, content
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = None
        self.finish(session, exchange, route, price, parsed if isinstance(parsed, dict) else None, started)
        return Response(content, status_code=response.status_code, headers=headers)

    async def relay(self, session: Session, exchange: Exchange, route: Route, price: Price | None,
                    response: httpx.Response, started: float) -> AsyncIterator[bytes]:
        """Pass the stream on as it comes, reading a copy; once it ends (or breaks, or the agent goes away),
        meter and record what it carried. A stream that began is never retried."""
        parser, assembler, events = SSEParser(), REASSEMBLERS.get(route.kind, Reassembler)(), 0
        try:
            async for chunk in response.aiter_bytes():
                for event in parser.feed(chunk):
                    events += 1
                    try:
                        assembler.feed(event)
                    except Exception as e:       # a stream the reassembler does not understand still passes
                        exchange.error, assembler = f"not reassembled: event {events}: {e!r}", Reassembler()
                yield self.upstream.redact(chunk)
        except httpx.HTTPError as e:
            exchange.error = f"the upstream stream broke after {events} events: {type(e).__name__}: {e}"
        except BaseException:
            exchange.error = f"the agent went away after {events} events"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
            exchange.status, exchange.events, exchange.response = response.status_code, events, assembler.result()
            self.finish(session, exchange, route, price, exchange.response, started)

    def finish(self, session: Session, exchange: Exchange, route: Route, price: Price | None, body: dict | None,
               started: float) -> None:
        exchange.seconds = time.monotonic() - started
        if price is not None and 200 <= exchange.status < 300:
            tokens = usage_of(route.kind, body)
            if tokens is None:
                exchange.usage_reported, tokens = False, estimate(exchange.request, body)
            exchange.tokens, exchange.dollars = tokens, price.dollars(tokens)
        session.charge(exchange)
        self.registry.writer.record(session, exchange)

    def refuse(self, session: Session, exchange: Exchange, answer: JSONResponse, why: str) -> JSONResponse:
        exchange.status, exchange.response, exchange.refused = answer.status_code, answer.body, why
        self.registry.writer.record(session, exchange)
        return answer
