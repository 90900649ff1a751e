"""How the HTTP server runs: uvicorn with hard limits on what a client may send before the app sees it.

uvicorn's httptools protocol accepts headers of any size, any number of them, and waits forever for a
client that sends them one byte at a time: one unauthenticated request with a 200 MiB header stalled every
callback ack for seconds. `LimitedProtocol` refuses, before the bytes are parsed or kept:
- a request line + headers over MAX_HEAD_BYTES (431), more than MAX_HEADERS header lines (431), a target
  over MAX_TARGET_BYTES (414);
- a head not complete HEAD_TIMEOUT_SECONDS after its first byte, or after the connection opened (408).
Refusals, and requests the parser rejects (uvicorn's own 400, which it would log with a traceback each
time), are counted and logged at most once per LOG_EVERY_SECONDS (a flood cannot flood the log); the
client's address is logged, never what it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any, Protocol

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 32 * 1024  # DingTalk's callbacks send ~1 KiB of headers; nginx's default is 8 KiB x 4
MAX_HEADERS = 100
MAX_TARGET_BYTES = 8 * 1024
HEAD_TIMEOUT_SECONDS = 10.0
LOG_EVERY_SECONDS = 60.0

log = logging.getLogger(__name__)


class _Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_STATUS_TEXT = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class RefusalLog:
    """Counts refused requests; one WARNING per interval says how many, why, and the last address."""

    def __init__(self, every_seconds: float = LOG_EVERY_SECONDS) -> None:
        self.every_seconds = every_seconds
        self.total = 0
        self._unlogged = 0
        self._last_logged = float("-inf")

    def refused(self, reason: str, client: tuple[str, int] | None) -> None:
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_logged < self.every_seconds:
            return
        address = client[0] if client else "unknown"
        log.warning(
            "refused %d HTTP request(s) before parsing; the last from %s: %s (limits in api/serving.py)",
            self._unlogged,
            address,
            reason,
        )
        self._unlogged = 0
        self._last_logged = now


REFUSALS = RefusalLog()


class LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on the request head (see the module docstring)."""

    head_timeout_seconds = HEAD_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._pending_refusal: _Refusal | None = None  # raised in a parser callback

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        # Feed no more than the head may still take; more bytes while it is still incomplete: refuse.
        part = data[: MAX_HEAD_BYTES - self._head_bytes]
        self._head_bytes += len(part)
        if part:
            super().data_received(part)
        rest = data[len(part) :]
        if not rest or self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
        else:
            self.data_received(rest)

    def send_400_response(self, msg: str) -> None:
        # httptools reports an exception raised in a callback as a parser error: answer with ours.
        refusal, self._pending_refusal = self._pending_refusal, None
        if refusal is not None:
            self._refuse(refusal.status, refusal.reason)
        else:
            REFUSALS.refused("malformed HTTP request (400)", self.client)
            super().send_400_response(msg)

    # Parser callbacks: a refusal raised here stops httptools (see send_400_response).
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_TARGET_BYTES:
            self._raise(414, f"request target longer than {MAX_TARGET_BYTES} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            self._raise(431, f"more than {MAX_HEADERS} header lines")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def _raise(self, status: int, reason: str) -> None:
        refusal = _Refusal(status, reason)
        self._pending_refusal = refusal
        raise refusal

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_seconds, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            if self._head_bytes == 0 and self.cycle is not None:
                self.transport.close()  # an idle keep-alive connection: nothing was asked
                return
            self._refuse(408, f"request head not complete within {self.head_timeout_seconds:g} s")

    def _refuse(self, status: int, reason: str) -> None:
        if self.transport.is_closing():
            return
        REFUSALS.refused(reason, self.client)
        body = reason.encode("ascii")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _STATUS_TEXT[status], len(body), body)
        )
        self.transport.close()


class _CountedElsewhere(logging.Filter):
    """Drops uvicorn's per-request "Invalid HTTP request" warning: REFUSALS counts and logs those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == _UVICORN_INVALID and record.levelno == logging.WARNING)


_UVICORN_INVALID = "Invalid HTTP request received."
_FILTER = _CountedElsewhere()


def server_config(app: Any, host: str, port: int, **extra: Any) -> uvicorn.Config:
    """The uvicorn configuration every server of ours runs with (the service, the tests, the benchmarks)."""
    logging.getLogger("uvicorn.error").addFilter(_FILTER)  # once: a logger keeps a filter only once
    options: dict[str, Any] = {
        "http": LimitedProtocol,
        "log_config": None,  # keep our logging configuration
        "access_log": False,  # our own lines say what happened, without bodies or URLs
        "lifespan": "on",
        "workers": 1,  # embedded stores have one owner: never more than one process (docs/architecture.md)
    }
    options.update(extra)
    return uvicorn.Config(app, host=host, port=port, **options)


class Companion(Protocol):
    """A process that serves beside the server (the acking process, api/front/): started once the server
    is ready, stopped before it stops."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; we exit 0 instead. A companion starts
    after the lifespan's startup and stops before the server's shutdown (its requests come through us)."""

    def __init__(self, config: uvicorn.Config, companion: Companion | None = None) -> None:
        super().__init__(config)
        self.companion = companion
        self.companion_failed = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        stops = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit or self.companion is None:
            return
        try:
            await self.companion.start()
        except Exception as exc:
            log.error("cannot start: %s", exc)
            self.companion_failed = self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.companion is not None:
            await self.companion.stop()
        await super().shutdown(sockets=sockets)

    @property
    def succeeded(self) -> bool:
        return self.started and not self.companion_failed
