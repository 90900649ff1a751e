"""The line the acking process keeps to the service: what it accepted, what came again, each outcome.

One text line per event on a socket pair, `kind<TAB>argument`: `ready`; `count <outcome>` (every
callback, for the metric); `schedule <claimed at> <message JSON>` (accepted: stored in the inbox, to be
answered); `redelivered <message JSON>` (a duplicate: its unsent reply is retried). Nothing is lost if a
line is: the message is in the inbox before its ack, and the service resumes what it finds there
unfinished (at start, after a database fault, and a message whose claim lapsed at the periodic check).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from agent.messages import IncomingMessage, message_from_json, message_to_json
from agent.observe import current_message_id
from api.delivery.inbox import Inbox

log = logging.getLogger(__name__)

LINE_LIMIT = 1024 * 1024  # a message's JSON: its callback body is at most 64 KiB
BUFFER_LIMIT = 16 * 1024 * 1024  # unread lines kept for a service that does not read (stopped, stuck)


class EventWriter:
    """The acking process's end: writes never wait (the socket's buffer and the transport's take them)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.dropped = 0

    def send(self, kind: str, argument: str = "") -> None:
        if self._writer.is_closing():
            return  # the service is gone: this process is stopping too (app.py watches the line)
        if self._writer.transport.get_write_buffer_size() > BUFFER_LIMIT:
            self.dropped += 1  # the inbox holds the message: resumed once its claim lapses
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("acking process: the service reads no events; %d line(s) dropped", self.dropped)
            return
        self._writer.write(f"{kind}\t{argument}\n".encode())

    def count(self, outcome: str) -> None:
        self.send("count", outcome)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


class FrontSink:
    """Intake's sink in the acking process: the inbox here, the answering there."""

    def __init__(self, inbox: Inbox, events: EventWriter, stored: Callable[[], None]) -> None:
        self._inbox = inbox
        self._events = events
        self._stored = stored  # the database took a write (clears a fault: app.StorageGate)
        self._claimed_at: dict[str, float] = {}

    async def accept(self, message: IncomingMessage) -> bool:
        now = time.time()
        claimed = await self._inbox.claim(message, now=now)
        self._stored()
        if claimed:
            self._claimed_at[message.message_id] = now
        return claimed

    def redelivered(self, message: IncomingMessage) -> None:
        self._events.send("redelivered", message_to_json(message))

    def schedule(self, message: IncomingMessage) -> None:
        claimed_at = self._claimed_at.pop(message.message_id, 0.0)  # set by accept, just before
        self._events.send("schedule", f"{claimed_at!r}\t{message_to_json(message)}")


class EventHandlers:
    """The service's end: what each event does there."""

    def __init__(
        self,
        *,
        schedule: Callable[[IncomingMessage, float], object],
        redelivered: Callable[[IncomingMessage], None],
        count: Callable[[str], None],
        ready: Callable[[], None],
    ) -> None:
        self.schedule = schedule
        self.redelivered = redelivered
        self.count = count
        self.ready = ready

    def handle(self, line: bytes) -> None:
        kind, _, argument = line.decode().rstrip("\n").partition("\t")
        if kind == "count":
            self.count(argument)
        elif kind in ("schedule", "redelivered"):
            claimed_at = 0.0
            if kind == "schedule":
                stamp, _, argument = argument.partition("\t")
                claimed_at = float(stamp)
            message = message_from_json(argument)
            token = current_message_id.set(message.message_id)  # the reply's log lines name it
            try:
                if kind == "schedule":
                    self.schedule(message, claimed_at)
                else:
                    self.redelivered(message)
            finally:
                current_message_id.reset(token)
        elif kind == "ready":
            self.ready()
        else:
            log.warning("acking process: unknown event %r ignored", kind[:40])


async def relay(reader: asyncio.StreamReader, handlers: EventHandlers) -> None:
    """Handle events until the acking process closes its end (it stopped or died)."""
    while True:
        try:
            line = await reader.readline()
        except (ConnectionError, OSError):
            return
        except ValueError:  # a line over LINE_LIMIT: not one of ours
            log.error("acking process: an event line over %d bytes was dropped", LINE_LIMIT)
            continue
        if not line:
            return
        try:
            handlers.handle(line)
        except Exception:
            log.exception("acking process: an event could not be handled (the inbox still holds it)")
