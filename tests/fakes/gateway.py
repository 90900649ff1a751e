"""A fake DingTalk Stream gateway: the HTTP `connections/open` endpoint and the WebSocket it hands out,
each in its own thread on a free 127.0.0.1 port (so the service's event loop is never the one serving).

Scriptable from a test's thread:

* `refuse_credentials` (401 for every open), `open_answers` (raw scripted answers, in order: a status
  and a JSON body, or text that is not JSON) — bad credentials and broken gateway answers;
* `push(body)` a CALLBACK frame, `ping()` a SYSTEM ping, `disconnect()` a SYSTEM disconnect,
  `close()` a clean close (1000), `drop()` the TCP socket without a close frame;
* `silence()`: that socket answers no more WebSocket pings and sends nothing (a zombie TCP link);
  `ping_every`: SYSTEM pings at that interval while it is set (application frames that keep an idle
  watchdog quiet);
* every ack is recorded with its arrival time (`time.monotonic()`, like the push times, and each socket's
  `last_frame_at`).

Tickets are single use: a WebSocket with an unknown or used ticket is refused with HTTP 401.
"""

from __future__ import annotations

import http
import itertools
import json
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from tests.fakes.servers import FakeDingTalk, LocalServer, Recorded
from tests.waiting import PATIENCE

OPEN_PATH = "/v1.0/gateway/connections/open"
BOT_TOPIC = "/v1.0/im/bot/messages/get"
CLIENT_ID = "dingstreamclient"
CLIENT_SECRET = "stream-app-secret-do-not-log"


@dataclass
class OpenAnswer:
    """One scripted answer to connections/open: `body` JSON, or `text` sent as text/html."""

    status: int = 200
    body: Any = None
    text: str | None = None


@dataclass
class Ack:
    message_id: str
    code: Any
    data: Any
    at: float  # time.monotonic() when it arrived
    socket: int  # which socket (index in FakeGateway.sockets) it came on
    raw: dict[str, Any]


@dataclass
class GatewaySocket:
    index: int
    conn: ServerConnection
    ticket: str
    opened_at: float
    closed_at: float | None = None
    close_code: int | None = None  # the code of the client's close frame; None: none came
    silent: bool = False  # no pongs, no SYSTEM pings
    last_frame_at: float | None = None  # time.monotonic() just before the last frame was sent to it
    closed: threading.Event = field(default_factory=threading.Event)

    @property
    def open(self) -> bool:
        return not self.closed.is_set()


class FakeGateway:
    def __init__(self, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.refuse_credentials = False
        self.openapi: FakeDingTalk | None = None  # answers the OpenAPI paths other than connections/open
        self.open_answers: deque[OpenAnswer] = deque()
        self.ping_every: float | None = None
        self.tickets: dict[str, bool] = {}  # ticket -> used
        self.refused_tickets = 0
        self.sockets: list[GatewaySocket] = []
        self.acks: list[Ack] = []
        self._first_ack: dict[str, Ack] = {}  # messageId -> its first ack
        self.pushed_at: dict[str, float] = {}  # frame messageId -> time.monotonic() before sending
        self.frames: dict[str, dict[str, Any]] = {}  # frame messageId -> the frame sent
        self._ticket_of: dict[int, str] = {}  # id(connection) -> its ticket
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._http = _OpenServer(self)
        self._ws: Server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._check_ticket,
            ping_interval=None,  # the client pings; this side only answers (unless silent)
            compression=None,
        )
        self.ws_port = self._ws.socket.getsockname()[1]
        self._ws_thread = threading.Thread(target=self._ws.serve_forever, name="fake-gateway-ws", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """DINGTALK_API_BASE for the service."""
        return self._http.url

    def start(self) -> FakeGateway:
        self._http.start()
        self._ws_thread.start()
        return self

    def stop(self) -> None:
        for record in self.sockets:
            record.silent = False  # let the close handshake through
        self._ws.shutdown()
        self._ws_thread.join(timeout=10)
        self._http.stop()

    # --- connections/open ------------------------------------------------------------------------

    @property
    def opens(self) -> list[Recorded]:
        return [r for r in self._http.requests if r.path.split("?", 1)[0] == OPEN_PATH]

    def _answer_open(self, handler: BaseHTTPRequestHandler, request: Recorded) -> None:
        if request.path.split("?", 1)[0] != OPEN_PATH or request.method != "POST":
            LocalServer.send_json(handler, 404, {"code": "notFound", "message": "no such route"})
            return
        if self.open_answers:
            answer = self.open_answers.popleft()
            if answer.text is not None:
                data = answer.text.encode()
                handler.send_response(answer.status)
                handler.send_header("Content-Type", "text/html")
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data)
            else:
                LocalServer.send_json(handler, answer.status, answer.body)
            return
        try:
            body = request.json()
        except ValueError:
            body = {}
        if (
            self.refuse_credentials
            or body.get("clientId") != self.client_id
            or body.get("clientSecret") != self.client_secret
        ):
            LocalServer.send_json(handler, 401, {"code": "InvalidAuthentication", "message": "bad client"})
            return
        ticket = f"tk+{uuid.uuid4().hex}/=="  # characters that must be URL-encoded in the query
        with self._cond:
            self.tickets[ticket] = False
        LocalServer.send_json(
            handler, 200, {"endpoint": f"ws://127.0.0.1:{self.ws_port}/connect", "ticket": ticket}
        )

    # --- the WebSocket ---------------------------------------------------------------------------

    def _check_ticket(self, conn: ServerConnection, request: Request) -> Response | None:
        ticket = parse_qs(urlsplit(request.path).query).get("ticket", [""])[0]
        with self._cond:
            if self.tickets.get(ticket) is not False:  # unknown, or used already
                self.refused_tickets += 1
                return conn.respond(http.HTTPStatus.UNAUTHORIZED, "invalid ticket\n")
            self.tickets[ticket] = True
            self._ticket_of[id(conn)] = ticket
        return None

    def _handle(self, conn: ServerConnection) -> None:
        with self._cond:
            ticket = self._ticket_of.pop(id(conn), "")
            record = GatewaySocket(len(self.sockets), conn, ticket, time.monotonic())
            self.sockets.append(record)
            self._cond.notify_all()
        original = conn.protocol.send_frame

        def send_frame(frame: Frame) -> None:  # a silent socket leaves WebSocket pings unanswered
            if frame.opcode is Opcode.PONG and record.silent:
                return
            original(frame)

        conn.protocol.send_frame = send_frame  # type: ignore[method-assign]
        threading.Thread(target=self._pinger, args=(record,), daemon=True).start()
        try:
            for raw in conn:
                self._record_ack(record, raw)
        except Exception:  # a dropped socket ends the loop like a close
            pass
        finally:
            received = conn.protocol.close_rcvd
            with self._cond:
                record.close_code = received.code if received is not None else None
                record.closed_at = time.monotonic()
                record.closed.set()
                self._cond.notify_all()

    def _record_ack(self, record: GatewaySocket, raw: str | bytes) -> None:
        at = time.monotonic()
        try:
            body = json.loads(raw)
            message_id = str(body["headers"]["messageId"])
        except (ValueError, KeyError, TypeError):
            body, message_id = {"unparsable": str(raw)[:200]}, ""
        with self._cond:
            ack = Ack(message_id, body.get("code"), body.get("data"), at, record.index, body)
            self.acks.append(ack)
            self._first_ack.setdefault(message_id, ack)
            self._cond.notify_all()

    def _pinger(self, record: GatewaySocket) -> None:
        while not record.closed.wait(self.ping_every or 0.1):
            if self.ping_every and not record.silent:
                try:
                    self.ping(record)
                except Exception:
                    return

    # --- scripting -------------------------------------------------------------------------------

    def current(self) -> GatewaySocket:
        with self._cond:
            live = [s for s in self.sockets if s.open]
        if not live:
            raise AssertionError("no open gateway socket")
        return live[-1]

    def send_frame(
        self,
        frame_type: str,
        topic: str,
        data: Any,
        *,
        message_id: str | None = None,
        to: GatewaySocket | None = None,
    ) -> str:
        message_id = message_id or f"frame-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        frame = {
            "specVersion": "1.0",
            "type": frame_type,
            "headers": {
                "appId": "fake-app",
                "connectionId": "fake-connection",
                "contentType": "application/json",
                "messageId": message_id,
                "time": str(int(time.time() * 1000)),
                "topic": topic,
            },
            "data": data if isinstance(data, str) else json.dumps(data, ensure_ascii=False),
        }
        target = to or self.current()
        with self._cond:
            self.frames[message_id] = frame
            self.pushed_at[message_id] = target.last_frame_at = time.monotonic()
        target.conn.send(json.dumps(frame, ensure_ascii=False))
        return message_id

    def push(
        self, body: dict[str, Any], *, message_id: str | None = None, to: GatewaySocket | None = None
    ) -> str:
        """A bot message (an HTTP callback body) in a CALLBACK frame; returns the frame's messageId."""
        return self.send_frame("CALLBACK", BOT_TOPIC, body, message_id=message_id, to=to)

    def ping(self, to: GatewaySocket | None = None) -> str:
        return self.send_frame("SYSTEM", "ping", {"opaque": uuid.uuid4().hex}, to=to)

    def disconnect(self, to: GatewaySocket | None = None) -> str:
        return self.send_frame("SYSTEM", "disconnect", {"reason": "gateway rolling restart"}, to=to)

    def silence(self, to: GatewaySocket | None = None) -> GatewaySocket:
        record = to or self.current()
        record.silent = True
        return record

    def close(self, to: GatewaySocket | None = None, code: int = 1000) -> None:
        (to or self.current()).conn.close(code, "bye")

    def drop(self, to: GatewaySocket | None = None) -> None:
        """End the TCP connection without a close frame."""
        (to or self.current()).conn.socket.shutdown(socket.SHUT_RDWR)

    # --- waiting ---------------------------------------------------------------------------------

    def wait_socket(self, count: int, timeout: float = PATIENCE) -> GatewaySocket:
        """Block until `count` WebSockets have been opened in all; return the count-th."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.sockets) >= count, timeout):
                raise AssertionError(f"expected {count} gateway socket(s), got {len(self.sockets)}")
            return self.sockets[count - 1]

    def wait_ack(self, message_id: str, timeout: float = PATIENCE) -> Ack:
        with self._cond:
            if not self._cond.wait_for(lambda: self.ack_of(message_id) is not None, timeout):
                raise AssertionError(f"no ack for frame {message_id}")
            ack = self.ack_of(message_id)
            assert ack is not None
            return ack

    def ack_of(self, message_id: str) -> Ack | None:
        return self._first_ack.get(message_id)

    def latency(self, ack: Ack) -> float:
        """Seconds from just before the push to the ack's arrival, as this gateway saw them."""
        return ack.at - self.pushed_at[ack.message_id]

    def wait_closed(self, record: GatewaySocket, timeout: float = PATIENCE) -> GatewaySocket:
        if not record.closed.wait(timeout):
            raise AssertionError(f"gateway socket {record.index} is still open")
        return record

    def wait_opens(self, count: int, timeout: float = PATIENCE) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while len(opens := self.opens) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} connections/open request(s), got {len(opens)}")
            time.sleep(0.01)
        return opens


class _OpenServer(LocalServer):
    def __init__(self, owner: FakeGateway) -> None:
        super().__init__()
        self._owner = owner

    def handle(self, handler: BaseHTTPRequestHandler, request: Recorded) -> None:
        rest = self._owner.openapi
        if rest is not None and request.path.split("?", 1)[0] != OPEN_PATH:
            rest.handle(handler, request)  # the rest of DingTalk's OpenAPI on the same base (file API)
            return
        self._owner._answer_open(handler, request)
