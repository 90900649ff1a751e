"""Local HTTP servers standing in for the processes across our boundaries: DingTalk's sending side here,
the OpenAI-compatible endpoint in tests/fakes/openai_server.py. Each runs in its own thread on a free
loopback port and records every request it receives.

A slow answer is a *hold*: a `threading.Event` the request waits on until the test sets it (or the
server stops), so "the answer has not come yet" is a fact the test controls, not a race against a sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.waiting import PATIENCE

HOLD_LIMIT_SECONDS = 120.0  # a hold the test forgot to release still ends (long after any wait gave up)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float = 0.0  # time.monotonic() when it arrived
    received_epoch: float = 0.0  # time.time() when it arrived (to compare with stored due times)

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of concurrent sends overflows it and the kernel resets
    # some connections (seen as a lost answer in CI). DingTalk's real servers don't do that to us.
    request_queue_size = 512


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 with a per-test script and a request log."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._holds: list[threading.Event] = []  # every hold a request waited on, released by stop()
        self._stopped = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _record(self) -> Recorded:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                item = Recorded(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.monotonic(),
                    time.time(),
                )
                with owner._arrived:
                    owner.requests.append(item)
                    owner._arrived.notify_all()
                return item

            def do_GET(self) -> None:
                owner.handle(self, self._record())

            def do_POST(self) -> None:
                owner.handle(self, self._record())

            def do_PUT(self) -> None:
                owner.handle(self, self._record())

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            holds = list(self._holds)
        for hold in holds:  # held requests end without an answer
            hold.set()
        self._server.shutdown()
        self._server.server_close()

    def hold(self, event: threading.Event, handler: BaseHTTPRequestHandler) -> bool:
        """Keep this request unanswered until `event` is set; False when the server stopped meanwhile
        (then the request gets no answer and its connection is closed)."""
        with self._lock:
            self._holds.append(event)
        event.wait(HOLD_LIMIT_SECONDS)
        with self._lock:
            stopped = self._stopped
        if stopped:
            handler.close_connection = True
        return not stopped

    def wait_for(self, count: int, timeout: float = PATIENCE, path: str = "") -> list[Recorded]:
        """Block until `count` requests (whose path contains `path`) have arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(matching := [r for r in self.requests if path in r.path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} request(s) to {path or '/'}, got {len(matching)}")
                self._arrived.wait(left)
            return matching

    @staticmethod
    def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def handle(self, handler: BaseHTTPRequestHandler, request: Recorded) -> None:
        raise NotImplementedError


_CARD_CALLS = {
    ("POST", "/v1.0/card/instances"): "create",
    ("POST", "/v1.0/card/instances/deliver"): "deliver",
    ("PUT", "/v1.0/card/streaming"): "update",
    ("PUT", "/v1.0/card/instances"): "finish",
}


@dataclass
class FakeFile:
    """A file the fake robot file API serves: `data`, or `size` bytes made as they are sent (a huge file
    that never sits in memory). `declare_length=False` sends it chunked, without Content-Length, so only
    counting the bytes can stop it; `url_status` answers the download URL (403: an expired URL)."""

    data: bytes = b""
    size: int = 0
    declare_length: bool = True
    url_status: int = 200
    pace: float = 0.0  # seconds between 64 KiB blocks: a file that takes a while to arrive
    sent: int = 0  # bytes written before the client stopped reading

    def chunks(self) -> Iterator[bytes]:
        if self.data:
            yield self.data
            return
        block = b"\x00" * 65536
        left = self.size
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)

    @property
    def length(self) -> int:
        return len(self.data) if self.data else self.size


class FakeDingTalk(LocalServer):
    """DingTalk's sending side: session webhooks, the OpenAPI (access token, group and one-to-one
    sends) and the custom-robot webhook. Each answers with its scripted results in order, then success.

    Session webhooks and the robot webhook: `errcodes` (HTTP 200 with that errcode) or `statuses` (an HTTP
    error status). OpenAPI sends: `openapi_statuses`. `holds`: each session-webhook post takes the next
    event, if any, and is not answered until the test sets it (a slow or lost answer); `card_holds` the
    same per card call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.errcodes: deque[int] = deque()
        self.statuses: deque[int] = deque()
        self.holds: deque[threading.Event] = deque()
        self.robot_errcodes: deque[int] = deque()
        self.openapi_statuses: deque[int] = deque()
        self.token_statuses: deque[int] = deque()
        self.tokens_issued = 0
        self.files: dict[str, FakeFile] = {}  # the robot file API: download code -> file
        # AI cards: scripted HTTP statuses per card call ("create", "deliver", "update", "finish")
        self.card_statuses: dict[str, deque[int]] = {
            k: deque() for k in ("create", "deliver", "update", "finish")
        }
        # AI cards: events a card call waits on, per call, before it is answered (a slow DingTalk)
        self.card_holds: dict[str, deque[threading.Event]] = {
            k: deque() for k in ("create", "deliver", "update", "finish")
        }

    def webhook(self, session: str = "s1") -> str:
        return f"{self.url}/robot/sendBySession?session={session}"

    def handle(self, handler: BaseHTTPRequestHandler, request: Recorded) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/v1.0/oauth2/accessToken":
            status = self.token_statuses.popleft() if self.token_statuses else 200
            if status != 200:
                self.send_json(handler, status, {"code": "invalidClientSecret", "message": "scripted"})
                return
            self.tokens_issued += 1
            self.send_json(handler, 200, {"accessToken": f"token-{self.tokens_issued}", "expireIn": 7200})
            return
        card_call = _CARD_CALLS.get((request.method, path))
        if card_call is not None:
            holds = self.card_holds[card_call]
            if holds and not self.hold(holds.popleft(), handler):
                return
            scripted = self.card_statuses[card_call]
            status = scripted.popleft() if scripted else 200
            if status != 200:
                self.send_json(handler, status, {"code": f"scripted{status}", "message": "scripted"})
                return
            self.send_json(handler, 200, {"success": True, "result": True})
            return
        if path == "/v1.0/robot/messageFiles/download":
            code = request.json().get("downloadCode", "")
            if code not in self.files:
                self.send_json(handler, 400, {"code": "invalidParameter.downloadCode", "message": "scripted"})
                return
            self.send_json(handler, 200, {"downloadUrl": f"{self.url}/download/{code}?Expires=1&Signature=x"})
            return
        if path.startswith("/download/"):
            self._serve_file(handler, self.files.get(path.removeprefix("/download/")))
            return
        if path.startswith("/v1.0/robot/"):
            status = self.openapi_statuses.popleft() if self.openapi_statuses else 200
            if status != 200:
                self.send_json(handler, status, {"code": f"scripted{status}", "message": "scripted"})
                return
            self.send_json(handler, 200, {"processQueryKey": "pqk"})
            return
        if path == "/robot/send":
            errcode = self.robot_errcodes.popleft() if self.robot_errcodes else 0
            self.send_json(handler, 200, {"errcode": errcode, "errmsg": "ok" if errcode == 0 else "scripted"})
            return
        if self.holds and not self.hold(self.holds.popleft(), handler):
            return
        if self.statuses:
            self.send_json(handler, self.statuses.popleft(), {"message": "scripted"})
            return
        errcode = self.errcodes.popleft() if self.errcodes else 0
        self.send_json(handler, 200, {"errcode": errcode, "errmsg": "ok" if errcode == 0 else "scripted"})

    def add_file(self, code: str, data: bytes = b"", **options: Any) -> FakeFile:
        self.files[code] = FakeFile(data, **options)
        return self.files[code]

    def _serve_file(self, handler: BaseHTTPRequestHandler, file: FakeFile | None) -> None:
        if file is None or file.url_status != 200:
            handler.send_response(file.url_status if file else 404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        if file.declare_length:
            handler.send_header("Content-Length", str(file.length))
        else:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for chunk in file.chunks():
                if file.declare_length:
                    handler.wfile.write(chunk)
                else:
                    handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                file.sent += len(chunk)
                if file.pace:
                    time.sleep(file.pace)
            if not file.declare_length:
                handler.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client stopped reading (the byte cap)
            handler.close_connection = True

    def posts(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.split("?", 1)[0] == path]

    def card_calls(self) -> list[tuple[str, dict[str, Any]]]:
        """The card calls in order: (create|deliver|update|finish, JSON body)."""
        calls = []
        for r in self.requests:
            name = _CARD_CALLS.get((r.method, r.path.split("?", 1)[0]))
            if name is not None:
                calls.append((name, r.json()))
        return calls

    def replies(self) -> list[dict[str, Any]]:
        """Bodies posted to session webhooks."""
        return [r.json() for r in self.posts("/robot/sendBySession")]
