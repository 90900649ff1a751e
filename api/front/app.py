"""The acking process's app: the callback route (stored in the inbox, then 200), everything else passed on.

It opens the same database as the service and nothing else: no model, no memory, no senders. Accepted
messages are announced to the service on the event line (events.py); when that line closes, the service is
gone and this process stops too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agent.settings.config import Settings
from agent.storage.database import Database, engine_for
from agent.storage.health import StorageError
from api.app import quiet_loggers
from api.delivery.inbox import Inbox
from api.delivery.intake import Reception
from api.front.events import LINE_LIMIT, EventWriter, FrontSink
from api.front.passing import PassOn, service_transport
from api.routes import dingtalk

log = logging.getLogger(__name__)

TRIAL_SECONDS = 0.1
OPEN_RETRY_SECONDS = 1.0


async def _stop_when_closed(reader: asyncio.StreamReader) -> None:
    """The service closed its end (it stopped, or died): stop this process the way SIGTERM does."""
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(4096):
            pass
    log.info("acking process: the service is gone; stopping")
    os.kill(os.getpid(), signal.SIGTERM)


class StorageGate:
    """The acking process's view of the database. After a fault, callbacks get 503 at once (DingTalk
    delivers them again), but one of them at most every TRIAL_SECONDS tries its insert: the first that
    works clears the fault. So callbacks are taken again as soon as the database works, without a probe
    of its own (the service probes, logs the fault and resumes the work: api/delivery/recovery.py)."""

    def __init__(self, database: Database) -> None:
        self._health = database.health
        self._tried_at = float("-inf")
        self.opened = False  # set once the database opens (at start, or later: _open_when_it_can)

    def open(self) -> bool:
        if not self.opened:
            return False
        if self._health.ok:
            return True
        now = time.monotonic()
        if now - self._tried_at < TRIAL_SECONDS:
            return False
        self._tried_at = now
        return True

    def worked(self) -> None:
        self._health.recovered()


async def _open_when_it_can(database: Database, gate: StorageGate) -> None:
    """Started again while the database fails (a crash of this process during a fault): it serves anyway —
    every other request is the service's, callbacks get 503 — and opens the database once it can."""
    while True:
        try:
            await database.open()
        except StorageError as exc:
            log.debug("acking process: the database cannot be opened yet: %s", exc)
            await asyncio.sleep(OPEN_RETRY_SECONDS)
            continue
        gate.opened = True
        return


def create_front_app(settings: Settings, *, events: socket.socket, service: str, token: str) -> FastAPI:
    """`events`: this end of the event line; `service`: the service's abstract socket name; `token`: what
    the service believes a passed-on client address with."""
    quiet_loggers()
    pass_on = PassOn(token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            reader, writer = await asyncio.open_connection(sock=events, limit=LINE_LIMIT)
            line = EventWriter(writer)
            stack.push_async_callback(line.close)
            database = Database(engine_for(settings), quiet_health=True, work_lanes=1)
            stack.push_async_callback(database.close)
            gate = StorageGate(database)
            opening = asyncio.create_task(_open_when_it_can(database, gate), name="open-database")
            stack.callback(opening.cancel)
            await asyncio.wait({opening}, timeout=OPEN_RETRY_SECONDS)  # at once, as a rule
            pass_on.transport = service_transport(service)
            stack.push_async_callback(pass_on.transport.aclose)
            inbox = Inbox(database, lease_seconds=settings.claim_lease_seconds)
            app.state.reception = Reception(
                settings, FrontSink(inbox, line, gate.worked), storage_ok=gate.open, count=line.count
            )
            watch = asyncio.create_task(_stop_when_closed(reader), name="event-line")
            stack.callback(watch.cancel)
            line.send("ready")
            log.info("acking process %d: callbacks are stored and acked here", os.getpid())
            yield

    app = FastAPI(title="DingHook", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(dingtalk.router)
    app.mount("/", pass_on)
    return app
