"""DingTalk Stream mode: one WebSocket to DingTalk's gateway, no public URL needed.

`StreamConnection.start()` returns at once and connects in the background on the service's event loop
(asyncio, the `websockets` client; our own small client, not the dingtalk-stream SDK: see
stack-notes.md). Every frame is acked before any work: CALLBACK frames with `{"response": null}`, SYSTEM
`ping` with its data echoed; then a bot message's `data` (the same JSON as an HTTP callback body) goes to
`on_message` in a task of its own, so the receive loop never waits for the inbox. `status` says whether
the connection is up, for /readyz and /metrics; `stop()` closes the socket with a normal close (1000).

Reconnects: at once on a SYSTEM `disconnect` or a clean close (a fresh ticket each time); after a
dropped socket (WebSocket pings unanswered for DINGTALK_STREAM_HEARTBEAT_SECONDS, or no close frame),
an idle connection (no application frame for DINGTALK_STREAM_IDLE_SECONDS) or a failed attempt, with
exponential backoff and jitter. Bad credentials or a broken gateway answer put the connection in
FAILING with a one-line detail (/readyz, /metrics, one log line — repeated only when it changes or every
few minutes); the service keeps running and keeps retrying.
"""

from __future__ import annotations

import asyncio
import enum
import importlib.metadata
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus, WebSocketException

from agent.settings.config import Settings
from api.dingtalk.stream_frames import (
    BOT_MESSAGE_TOPIC,
    Frame,
    GatewayError,
    Ticket,
    ack_for,
    local_ip,
    open_connection,
    parse_frame,
    safe_url,
)
from api.metrics import Metrics

log = logging.getLogger(__name__)

OPEN_TIMEOUT_SECONDS = 10.0  # the gateway's HTTP answer, and the WebSocket handshake
CLOSE_TIMEOUT_SECONDS = 3.0  # the close handshake (then the TCP connection is just dropped)
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
CREDENTIALS_BACKOFF_CAP_SECONDS = 300.0  # a wrong AppSecret is not fixed by retrying sooner
STABLE_SECONDS = 10.0  # a connection that lived this long resets the backoff
RELOG_SECONDS = 300.0  # the same failure is logged again at most this often
HANDOFF_GRACE_SECONDS = 5.0  # stop(): acked messages still on their way into the inbox


class StreamState(enum.StrEnum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILING = "failing"  # an error that retrying has not fixed yet (bad credentials, a broken gateway)


@dataclass(frozen=True)
class StreamStatus:
    state: StreamState
    detail: str = ""  # why it is not connected: one line, no secret
    since: float = 0.0  # time.time() of the last state change

    @property
    def ready(self) -> bool:
        return self.state is StreamState.CONNECTED


class Ending(enum.StrEnum):
    """Why a live connection ended (the reconnects metric's label)."""

    DISCONNECT = "disconnect"  # the gateway sent SYSTEM disconnect
    CLOSED = "closed"  # a clean close (1000/1001) by the gateway
    DROPPED = "dropped"  # no close frame, an error close, or WebSocket pings unanswered (dead TCP)
    IDLE = "idle"  # no application frame for DINGTALK_STREAM_IDLE_SECONDS (a zombie connection)
    ERROR = "error"  # a bug on our side while handling a frame


_ENDINGS = {
    Ending.DISCONNECT: "the gateway asked to reconnect (SYSTEM disconnect)",
    Ending.CLOSED: "the gateway closed the connection",
    Ending.DROPPED: "the connection dropped",
    Ending.IDLE: "no frame from the gateway for {idle:g} s",
    Ending.ERROR: "a frame could not be handled",
}


def _user_agent() -> str:
    try:
        return f"dinghook/{importlib.metadata.version('dinghook')}"
    except importlib.metadata.PackageNotFoundError:
        return "dinghook/0"


class StreamConnection:
    def __init__(
        self,
        *,
        settings: Settings,
        http: httpx.AsyncClient,
        on_message: Callable[[str], Awaitable[object]],
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        self._on_message = on_message
        self._metrics = metrics
        self._status = StreamStatus(StreamState.STOPPED, "not started", time.time())
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # messages being handed over, old sockets closing
        self._stopping = False
        self._failures = 0  # consecutive failed attempts and short-lived connections (the backoff's step)
        self._logged: tuple[str, float] | None = None  # the last failure logged, and when
        self._local_ip: str | None = None
        self._random = random.Random()  # noqa: S311 - jitter, not cryptography

    @property
    def status(self) -> StreamStatus:
        return self._status

    async def start(self) -> None:
        """Connect in the background; returns at once. A second call while running does nothing."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._set(StreamState.CONNECTING, "connecting to the gateway")
        log.info("stream: connecting to the gateway at %s", safe_url(self._settings.dingtalk_api_base))
        self._task = asyncio.create_task(self._run(), name="dingtalk-stream")

    async def stop(self) -> None:
        """Close the WebSocket normally (the gateway sees code 1000) and end the background task.
        Idempotent; safe when start() was never called or never connected."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # the task closes its socket on the way out (see _live)
            await asyncio.wait({task})  # (a cancellation of stop() itself still propagates)
        if self._background:  # acked messages reach the inbox before the service drains
            await asyncio.wait(set(self._background), timeout=HANDOFF_GRACE_SECONDS)
        if self._status.state is not StreamState.STOPPED:
            self._set(StreamState.STOPPED, "stopped")
            if task is not None:
                log.info("stream: stopped")

    # --- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.0
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                ws, where = await self._open()
            except GatewayError as exc:
                delay = self._failed(exc)
                continue
            except Exception as exc:  # a bug must not end the loop: report it like a failure
                log.exception("stream: unexpected error while connecting")
                delay = self._failed(GatewayError("error", f"unexpected error ({type(exc).__name__})"))
                continue
            connected_at = time.monotonic()
            ending, why = await self._live(ws, where)
            delay = self._ended(ending, why, time.monotonic() - connected_at)

    async def _open(self) -> tuple[ClientConnection, str]:
        settings = self._settings
        if self._local_ip is None:
            self._local_ip = await asyncio.to_thread(local_ip, settings.dingtalk_api_base)
        secret = settings.dingtalk_client_secret
        ticket: Ticket = await open_connection(
            self._http,
            api_base=settings.dingtalk_api_base,
            client_id=settings.dingtalk_client_id or "",
            client_secret=secret.get_secret_value() if secret is not None else "",
            user_agent=_user_agent(),
            local_address=self._local_ip,
            request_seconds=OPEN_TIMEOUT_SECONDS,
        )
        heartbeat = settings.dingtalk_stream_heartbeat_seconds
        try:
            ws = await connect(
                ticket.url,
                ping_interval=heartbeat,  # WebSocket pings: a dead TCP link ends within ~2 heartbeats
                ping_timeout=heartbeat,
                open_timeout=OPEN_TIMEOUT_SECONDS,
                close_timeout=CLOSE_TIMEOUT_SECONDS,
                user_agent_header=_user_agent(),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise GatewayError(
                "websocket", f"gateway WebSocket at {ticket.where} refused the ticket (HTTP {status})"
            ) from None
        except (OSError, TimeoutError, WebSocketException) as exc:  # never str(exc): it may hold the URL
            raise GatewayError(
                "websocket", f"cannot open the gateway WebSocket at {ticket.where} ({type(exc).__name__})"
            ) from None
        return ws, ticket.where

    async def _live(self, ws: ClientConnection, where: str) -> tuple[Ending, str]:
        """Serve one connection until it ends; close it normally whatever happens."""
        self._set(StreamState.CONNECTED, "")
        self._logged = None  # a failure after this is news again
        log.info("stream: connected to %s", where)
        try:
            return await self._receive(ws)
        finally:
            if self._stopping:
                await ws.close(1000, "service stopping")  # the gateway sees it before stop() returns
            else:  # never let a slow close handshake delay the next connection
                self._keep(asyncio.create_task(ws.close(1000), name="dingtalk-stream-close"))

    async def _receive(self, ws: ClientConnection) -> tuple[Ending, str]:
        """Until the connection ends: why, and a more precise reason for the log when there is one."""
        idle = self._settings.dingtalk_stream_idle_seconds
        bad_frames = 0
        while True:
            try:
                async with asyncio.timeout(idle):  # application frames only: pongs never arrive here
                    raw = await ws.recv()
                frame = parse_frame(raw)
                if frame is None:
                    self._count_frame("invalid")
                    bad_frames += 1
                    if bad_frames == 1:
                        log.warning("stream: ignored a frame that is not a JSON object")
                    continue
                if await self._answer(ws, frame):
                    return Ending.DISCONNECT, ""
            except TimeoutError:
                return Ending.IDLE, ""
            except ConnectionClosedOK:
                return Ending.CLOSED, ""
            except ConnectionClosed as exc:
                if exc.sent is not None and exc.sent.reason == "keepalive ping timeout":
                    heartbeat = self._settings.dingtalk_stream_heartbeat_seconds
                    return Ending.DROPPED, f"the gateway left WebSocket pings unanswered for {heartbeat:g} s"
                return Ending.DROPPED, ""
            except Exception:
                log.exception("stream: error while handling a frame")
                return Ending.ERROR, ""

    async def _answer(self, ws: ClientConnection, frame: Frame) -> bool:
        """Ack the frame first, then hand a bot message over. True for SYSTEM disconnect."""
        self._count_frame(frame.metric_type)
        if frame.message_id:
            await ws.send(ack_for(frame))
        else:
            log.debug("stream: a %s frame without messageId, not acked", frame.type)
        if frame.type == "CALLBACK":
            if frame.topic == BOT_MESSAGE_TOPIC and frame.data:
                self._keep(asyncio.create_task(self._hand_over(frame.data), name="dingtalk-stream-message"))
            else:
                log.info("stream: acked a callback on topic %r without handling it", frame.topic[:80])
        elif frame.type == "SYSTEM" and frame.topic == "disconnect":
            return True
        return False

    async def _hand_over(self, data: str) -> None:
        try:
            await self._on_message(data)
        except Exception:
            log.exception("stream: an acked message could not be taken in")

    # --- state, backoff, logs ----------------------------------------------------------------------

    def _failed(self, exc: GatewayError) -> float:
        self._failures += 1
        cap = CREDENTIALS_BACKOFF_CAP_SECONDS if exc.credentials else BACKOFF_CAP_SECONDS
        delay = self._backoff(cap)
        self._set(StreamState.FAILING, exc.detail)
        if self._metrics is not None:
            self._metrics.stream_failure(exc.kind)
        now = time.monotonic()
        if self._logged is None or self._logged[0] != exc.detail or now - self._logged[1] >= RELOG_SECONDS:
            self._logged = (exc.detail, now)
            log.log(
                logging.ERROR if exc.credentials else logging.WARNING,
                "stream: not connected: %s; retrying with backoff up to every %.0f s (next in %.1f s)",
                exc.detail,
                cap,
                delay,
            )
        return delay

    def _ended(self, ending: Ending, why: str, lived: float) -> float:
        if self._metrics is not None:
            self._metrics.stream_reconnect(ending.value)
        if lived >= STABLE_SECONDS:
            self._failures = 0
        at_once = ending in (Ending.DISCONNECT, Ending.CLOSED) and self._failures == 0
        self._failures += 1  # a gateway that keeps closing at once is not hammered: the next end backs off
        delay = 0.0 if at_once else self._backoff(BACKOFF_CAP_SECONDS)
        why = why or _ENDINGS[ending].format(idle=self._settings.dingtalk_stream_idle_seconds)
        self._set(StreamState.CONNECTING, f"reconnecting: {why}")
        log.log(
            logging.INFO if at_once else logging.WARNING,
            "stream: %s; reconnecting %s",
            why,
            "now" if at_once else f"in {delay:.1f} s",
        )
        return delay

    def _backoff(self, cap: float) -> float:
        """Exponential in the consecutive failures, with jitter (half to full), capped."""
        step = min(cap, BACKOFF_FIRST_SECONDS * 2.0 ** min(self._failures - 1, 30))
        return step * self._random.uniform(0.5, 1.0)

    def _set(self, state: StreamState, detail: str) -> None:
        since = self._status.since if state is self._status.state else time.time()
        self._status = StreamStatus(state, detail, since)
        if self._metrics is not None:
            self._metrics.stream_state(state.value, [s.value for s in StreamState])

    def _count_frame(self, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.stream_frame(kind)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)
