"""The service's side of the acking process: starts it once the service is ready, starts it again if it
exits, stops it first at shutdown (so no callback is acked that the service will not see).

The service binds PORT and keeps the listening sockets open while the acking process runs, so connections
wait in the backlog while it (re)starts; they are closed as soon as it has stopped at shutdown, so a late
client is refused at once instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time

from api.front.events import LINE_LIMIT, EventHandlers, relay

log = logging.getLogger(__name__)

TOKEN_ENV = "DINGBOT_FRONT_TOKEN"  # noqa: S105 (a variable's name) — the environment: argv is visible to all
SETTINGS_ENV = "DINGBOT_FRONT_SETTINGS"  # the service's settings fingerprint (dingbot/front.py compares)
START_PATIENCE_SECONDS = 60.0  # a cold start imports FastAPI, the storage layer and LangChain's types
STOP_GRACE_SECONDS = 10.0
FIRST_RESTART_DELAY_SECONDS = 1.0
LONGEST_RESTART_DELAY_SECONDS = 30.0
STEADY_SECONDS = 60.0  # a process that ran this long starts the next delay from the first again


class FrontError(Exception):
    """The acking process could not start."""


class AckProcess:
    def __init__(
        self,
        listeners: list[socket.socket],
        *,
        service: str,
        token: str,
        settings_fingerprint: str,
        handlers: EventHandlers,
    ) -> None:
        self._listeners = listeners
        self._service = service  # the service's abstract socket name
        self._env = {**os.environ, TOKEN_ENV: token, SETTINGS_ENV: settings_fingerprint}
        self._handlers = handlers
        self._ready = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._line: asyncio.StreamWriter | None = None  # kept: a collected StreamWriter closes the socket

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _on_ready(self) -> None:
        self._ready.set()

    async def _spawn(self) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader]:
        ours, theirs = socket.socketpair()
        listening = [str(listener.fileno()) for listener in self._listeners]
        try:
            # pass_fds: these descriptors reach this child only (never the converter or MCP servers).
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "dingbot.front", "--events-fd", str(theirs.fileno())),
                *("--service", self._service, *(f"--listen-fd={fd}" for fd in listening)),
                pass_fds=(theirs.fileno(), *(listener.fileno() for listener in self._listeners)),
                start_new_session=True,  # a terminal's Ctrl-C reaches the service, which stops this first
                env=self._env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            reader, writer = await asyncio.open_connection(sock=ours, limit=LINE_LIMIT)
        except BaseException:
            ours.close()
            process.kill()
            raise
        self._close_line()
        self._line = writer
        return process, reader

    def _close_line(self) -> None:
        if self._line is not None:
            self._line.close()
            self._line = None

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
        """Relay its events; when it exits unasked, start it again (1 s, then twice as long each time up to
        30 s, back to 1 s after a run of a minute)."""
        delay = FIRST_RESTART_DELAY_SECONDS
        started = time.monotonic()
        while True:
            await relay(reader, self._handlers)
            code = await process.wait()
            self._close_line()
            if self._stopping:
                return
            if time.monotonic() - started >= STEADY_SECONDS:
                delay = FIRST_RESTART_DELAY_SECONDS
            log.error("the acking process exited (code %s); starting it again in %g s", code, delay)
            while True:
                await asyncio.sleep(delay)
                delay = min(2 * delay, LONGEST_RESTART_DELAY_SECONDS)
                if self._stopping:
                    return
                try:
                    process, reader = await self._spawn()
                except Exception as exc:
                    log.error("could not start the acking process again (%s); next try in %g s", exc, delay)
                    continue
                break
            self._process, started = process, time.monotonic()
            if self._stopping:  # stop() ran while it was starting: it never saw this one
                await _terminate(process)

    async def stop(self) -> None:
        """SIGTERM, STOP_GRACE_SECONDS to finish what it acks, then SIGKILL; its last events are relayed;
        then PORT is closed."""
        self._stopping = True
        seen: asyncio.subprocess.Process | None = None
        while self._process is not None and self._process is not seen:  # one may be starting meanwhile
            seen = self._process
            await _terminate(seen)
        if self._watch is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._watch, STOP_GRACE_SECONDS)
        self._close_line()
        for listener in self._listeners:
            listener.close()


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
    except TimeoutError:
        log.error("the acking process did not stop in %g s; killed", STOP_GRACE_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
