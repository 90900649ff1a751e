"""Every request but the callback, passed on from the acking process to the service with its client.

The service listens on a Unix socket of its own (abstract: no file); the acking process forwards the
request's method, target, headers and body, and streams the answer back. The client's address travels in
`x-dingbot-peer`, which the service believes only with the token it gave the acking process
(`PeerFromFront`): the console's allowlist and lockout, and the mock-mode "from this machine" rule, see the
real client, never the acking process.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

PEER_HEADER = b"x-dingbot-peer"
TOKEN_HEADER = b"x-dingbot-front"
# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's own: never passed on, either way.
HOP_BY_HOP = frozenset(
    {
        *(b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization"),
        *(b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"),
    }
)
SERVICE_TIMEOUT_SECONDS = 120.0  # the console's doctor runs checks that take a while


def service_client(address: str) -> httpx.AsyncClient:
    """A client for the service's abstract Unix socket (`address` without its leading NUL)."""
    transport = httpx.AsyncHTTPTransport(uds="\0" + address)
    return httpx.AsyncClient(
        transport=transport,
        base_url="http://dingbot-service",
        timeout=httpx.Timeout(SERVICE_TIMEOUT_SECONDS, connect=5.0),
        follow_redirects=False,
        trust_env=False,
    )


class PassOn:
    """ASGI app of the acking process for everything but the callback: the service answers it."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self.client: httpx.AsyncClient | None = None  # set by the acking process's lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.client is None:
            return  # WebSocket: the service serves none
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in HOP_BY_HOP and name not in (PEER_HEADER, TOKEN_HEADER)
        ]
        client = scope.get("client")
        if client:
            headers.append((PEER_HEADER, f"{client[0]} {client[1]}".encode()))
        headers.append((TOKEN_HEADER, self._token))
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        outgoing = self.client.build_request(  # the body streamed: the service's own limits apply
            scope["method"], target.decode("latin-1"), headers=headers, content=_body(receive)
        )
        try:
            answer = await self.client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            log.warning("could not pass a request on to the service: %s", type(exc).__name__)
            unavailable = JSONResponse(
                {"error": "the service is not reachable (starting or stopping): try again shortly"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
            await unavailable(scope, receive, send)
            return
        try:
            await _relay_answer(answer, send)
        finally:
            await answer.aclose()


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # http.disconnect: the client went away
        if message.get("body"):
            yield message["body"]
        if not message.get("more_body"):
            return


async def _relay_answer(answer: httpx.Response, send: Send) -> None:
    headers = [(name, value) for name, value in answer.headers.raw if name.lower() not in HOP_BY_HOP]
    await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
    async for chunk in answer.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class PeerFromFront:
    """The service's middleware: a request the acking process passed on gets the client's address back.
    The two headers are removed from every request; the address is believed only with the token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = _with_peer(scope, self._token)
        await self.app(scope, receive, send)


def _with_peer(scope: Scope, token: bytes) -> dict[str, Any]:
    token_seen = peer = None
    kept = []
    for name, value in scope["headers"]:
        if name == TOKEN_HEADER:
            token_seen = value
        elif name == PEER_HEADER:
            peer = value
        else:
            kept.append((name, value))
    changed = dict(scope, headers=kept)
    if token_seen is not None and peer and hmac.compare_digest(token_seen, token):
        host, _, port = peer.decode("latin-1").partition(" ")
        changed["client"] = (host, int(port) if port.isdigit() else 0)
    return changed
