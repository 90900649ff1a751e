"""Every request but the callback, passed on from the acking process to the service with its client.

The service listens on a Unix socket of its own (abstract: no file); the acking process forwards the
request's method, target (as sent), headers and body, and streams the answer back. The client's address
travels in `x-dingbot-peer` and the scheme (https behind a trusted TLS proxy) in `x-dingbot-scheme`, which
the service believes only with the token it gave the acking process (`PeerFromFront`): the console's
allowlist, lockout and Secure cookies, and the mock-mode "from this machine" rule, see the real client.
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
SCHEME_HEADER = b"x-dingbot-scheme"  # https behind a TLS proxy the acking process trusts: Secure cookies
TOKEN_HEADER = b"x-dingbot-front"
OURS = (PEER_HEADER, SCHEME_HEADER, TOKEN_HEADER)
# Set again by the acking process's own server on the way out.
NOT_RELAYED = frozenset({b"date", b"server"})
# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's own: never passed on, either way.
HOP_BY_HOP = frozenset(
    {
        *(b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization"),
        *(b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"),
    }
)
SERVICE_TIMEOUT_SECONDS = 120.0  # the console's doctor runs checks that take a while


SERVICE_URL = httpx.URL("http://dingbot-service")
TIMEOUT = httpx.Timeout(SERVICE_TIMEOUT_SECONDS, connect=5.0).as_dict()


def service_transport(address: str) -> httpx.AsyncHTTPTransport:
    """Connections to the service's abstract Unix socket (`address` without its leading NUL). A transport,
    not a client: a client keeps the cookies of every answer and would send one person's console session
    with everyone's requests."""
    # Shorter than the service's keep-alive (uvicorn: 5 s), so a connection it is closing is not reused.
    return httpx.AsyncHTTPTransport(uds="\0" + address, limits=httpx.Limits(keepalive_expiry=2.0))


class PassOn:
    """ASGI app of the acking process for everything but the callback: the service answers it."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self.transport: httpx.AsyncHTTPTransport | None = None  # set by the acking process's lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.transport is None:
            return  # WebSocket: the service serves none
        headers = [
            (name, value) for name, value in scope["headers"] if name not in HOP_BY_HOP and name not in OURS
        ]
        client = scope.get("client")
        if client:
            headers.append((PEER_HEADER, f"{client[0]} {client[1]}".encode()))
        headers.append((SCHEME_HEADER, scope.get("scheme", "http").encode()))
        headers.append((TOKEN_HEADER, self._token))
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        outgoing = httpx.Request(  # the body streamed: the service's own limits apply
            scope["method"],
            SERVICE_URL.copy_with(raw_path=target),  # as the client sent it: no merging
            headers=headers,
            content=_body(receive),
            extensions={"timeout": TIMEOUT},
        )
        try:
            answer = await self.transport.handle_async_request(outgoing)
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
    headers = [
        (name, value)
        for name, value in answer.headers.raw
        if name.lower() not in HOP_BY_HOP and name.lower() not in NOT_RELAYED
    ]
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
    ours: dict[bytes, bytes] = {}
    kept = []
    for name, value in scope["headers"]:
        if name in OURS:
            ours[name] = value
        else:
            kept.append((name, value))
    changed = dict(scope, headers=kept)
    if hmac.compare_digest(ours.get(TOKEN_HEADER, b""), token):
        if peer := ours.get(PEER_HEADER):
            host, _, port = peer.decode("latin-1").partition(" ")
            changed["client"] = (host, int(port) if port.isdigit() else 0)
        if ours.get(SCHEME_HEADER) in (b"http", b"https"):
            changed["scheme"] = ours[SCHEME_HEADER].decode()
    return changed
