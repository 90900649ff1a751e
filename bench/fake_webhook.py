"""A fake DingTalk session webhook for the ack-latency bench, run in its own process.

It answers every POST with errcode 0 and counts them (`GET /count` reports the count, the number of
distinct `session` query values and the process id, so that a bench can read its CPU time), so every
accepted callback's background reply has somewhere to go.

`GET /tokens` tells which message each reply answers: in mock mode the reply quotes the person's text,
so a bench that puts a token like `bench-000123` (TOKEN_PATTERN) in each message's text can count the
replies per token (duplicates show as a count above 1). It reports the number of POSTs, those without a
token, the wall-clock time of the last POST, and per token the count and the time of its first reply —
and of those, the fired reminders ("⏰" in the body): their count and the time of the first.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.settings import HOST, STARTUP_TIMEOUT_S

WEBHOOK_OK = {"errcode": 0, "errmsg": "ok"}
TOKEN_PATTERN = re.compile(r"bench-\d{6}")  # the marker bench/delivery.py puts in each message's text
REMINDER_MARK = "\u23f0"  # "⏰": a fired reminder (bench/reminders.py), counted apart from other replies


class _WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # the default backlog of 5 resets connections in a burst

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _WebhookHandler)
        self._lock = threading.Lock()
        self._count = 0
        self._sessions: set[str] = set()
        self._untagged = 0
        self._last_post_at: float | None = None
        self._tokens: dict[str, dict[str, float]] = {}  # token -> {"count": n, "first_at": epoch s}

    def record(self, session: str, body: bytes = b"") -> None:
        now = time.time()  # wall clock: comparable with the bench process's own time.time()
        tokens = set(TOKEN_PATTERN.findall(body.decode("utf-8", errors="replace")))
        with self._lock:
            self._count += 1
            self._sessions.add(session)
            self._last_post_at = now
            if not tokens:
                self._untagged += 1
            reminder = REMINDER_MARK in body.decode("utf-8", errors="replace")
            for token in tokens:
                seen = self._tokens.setdefault(token, {"count": 0, "first_at": now, "reminders": 0})
                seen["count"] += 1
                if reminder:
                    seen["reminders"] += 1
                    seen.setdefault("reminder_at", now)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"count": self._count, "distinct_sessions": len(self._sessions), "pid": os.getpid()}

    def tokens(self) -> dict[str, Any]:
        with self._lock:
            return {
                "count": self._count,
                "untagged": self._untagged,
                "last_post_at": self._last_post_at,
                "tokens": {token: dict(seen) for token, seen in self._tokens.items()},
            }


class _WebhookHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the service's httpx client expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _WebhookServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        session = parse_qs(urlsplit(self.path).query).get("session", [""])[0]
        self.server.record(session, body)
        self._answer(200, WEBHOOK_OK)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/count":
            self._answer(200, self.server.snapshot())
        elif path == "/tokens":
            self._answer(200, self.server.tokens())
        else:
            self._answer(404, {"error": "not found"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _serve_webhook(port_queue: Any) -> None:
    """Child-process entry: bind a free loopback port, report it, serve until terminated."""
    server = _WebhookServer((HOST, 0))
    port_queue.put(server.server_address[1])
    server.serve_forever(poll_interval=0.2)


@contextlib.contextmanager
def fake_webhook() -> Iterator[int]:
    """Start the fake webhook in a spawned process, yield its port, stop it on the way out."""
    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    proc = ctx.Process(target=_serve_webhook, args=(port_queue,), name="fake-dingtalk-webhook", daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            with contextlib.suppress(queue.Empty):
                port = int(port_queue.get(timeout=0.2))
                break
            if not proc.is_alive():
                raise RuntimeError(f"the fake webhook process exited with {proc.exitcode} before serving")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fake webhook did not start within {STARTUP_TIMEOUT_S:.0f} s")
        yield port
    finally:
        proc.terminate()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        port_queue.close()
