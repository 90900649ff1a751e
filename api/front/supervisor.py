"""The service's side of the acking process: starts it once the service is ready, starts it again if it
exits, stops it first at shutdown (so no callback is acked that the service will not see).

The service binds PORT and keeps the listening socket open the whole time, so connections wait in its
backlog while the acking process (re)starts, and a restarted service can bind the port again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from api.front.events import LINE_LIMIT, EventHandlers, relay

log = logging.getLogger(__name__)

TOKEN_ENV = "DINGBOT_FRONT_TOKEN"  # noqa: S105 (a variable's name) — passed in the environment: argv is visible to every user
START_PATIENCE_SECONDS = 60.0  # a cold start imports FastAPI, the storage layer and LangChain's types
STOP_GRACE_SECONDS = 10.0
RESTART_DELAY_SECONDS = 1.0


class FrontError(Exception):
    """The acking process could not start."""


class AckProcess:
    def __init__(self, listener: socket.socket, *, service: str, token: str, handlers: EventHandlers) -> None:
        self._listener = listener
        self._service = service  # the service's abstract socket name
        self._token = token
        self._handlers = handlers
        self._ready = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _on_ready(self) -> None:
        self._ready.set()

    async def _spawn(self) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader]:
        ours, theirs = socket.socketpair()
        fds = (self._listener.fileno(), theirs.fileno())
        try:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "dingbot.front", "--listen-fd", str(fds[0])),
                *("--events-fd", str(fds[1]), "--service", self._service),
                pass_fds=fds,
                start_new_session=True,  # a terminal's Ctrl-C reaches the service, which stops this first
                env={**os.environ, TOKEN_ENV: self._token},
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours, limit=LINE_LIMIT)
        # Kept: a StreamWriter closes the socket when it is collected, which the acking process would read
        # as this process being gone. Closed when the process it talks to has exited.
        self._writers.append(writer)
        return process, reader

    async def start(self) -> None:
        """Start it and wait until it serves; FrontError when it cannot."""
        self._handlers.ready = self._on_ready
        process, reader = await self._spawn()
        self._process = process
        self._watch = asyncio.create_task(self._keep(process, reader), name="acking-process")
        ready = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(process.wait())
        await asyncio.wait({ready, exited}, timeout=START_PATIENCE_SECONDS, return_when="FIRST_COMPLETED")
        ready.cancel()
        exited.cancel()
        if not self._ready.is_set():
            await self.stop()
            raise FrontError(
                "the process that acks callbacks did not start (its error is above); "
                "ACK_PROCESS=false acks them in the service's own process"
            )
        log.info("callbacks are acked by process %d (ACK_PROCESS)", process.pid)

    async def _keep(self, process: asyncio.subprocess.Process, reader: asyncio.StreamReader) -> None:
        """Relay its events; when it exits unasked, start it again."""
        while True:
            await relay(reader, self._handlers)
            code = await process.wait()
            for writer in self._writers:
                writer.close()
            self._writers.clear()
            if self._stopping:
                return
            log.error(
                "the acking process exited (code %s); starting it again in %g s", code, RESTART_DELAY_SECONDS
            )
            await asyncio.sleep(RESTART_DELAY_SECONDS)
            if self._stopping:
                return
            try:
                process, reader = await self._spawn()
            except OSError as exc:
                log.error("could not start the acking process again: %s", exc)
                continue
            self._process = process

    async def stop(self) -> None:
        """SIGTERM, STOP_GRACE_SECONDS to finish what it acks, then SIGKILL; its last events are relayed."""
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
            except TimeoutError:
                log.error("the acking process did not stop in %g s; killed", STOP_GRACE_SECONDS)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._watch, STOP_GRACE_SECONDS)
