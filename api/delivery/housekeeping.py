"""The periodic check, every CHECK_INTERVAL_SECONDS: send due replies, fire due reminders (the safety net
behind their timer), resume stuck work, expire old rows, check a failing model endpoint again, open
long-term memory again when its vector server is back, and start again MCP servers that failed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from agent.limits import Limiter
from agent.media.context import FileContext
from agent.memory.history import HistoryStore
from agent.memory.service import MemoryService
from agent.model.health import ModelHealth, ModelState
from agent.storage.health import StorageError
from agent.tools.mcp import McpServers
from api.delivery.courier import Courier
from api.delivery.dispatcher import Dispatcher
from api.delivery.inbox import MAX_ATTEMPTS, Inbox
from api.delivery.outbox import Outbox
from api.delivery.reminders import ReminderClock

log = logging.getLogger(__name__)
MODEL_CHECK_BUDGET_SECONDS = 20.0  # a check is a few requests of at most CHECK_TIMEOUT_SECONDS each


class PeriodicCheck:
    def __init__(
        self,
        *,
        inbox: Inbox,
        outbox: Outbox,
        history: HistoryStore,
        dispatcher: Dispatcher,
        courier: Courier,
        interval_seconds: float,
        retention_days: float,
        retry_after_seconds: float,
        limiter: Limiter | None = None,
        model: ModelHealth | None = None,
        memory: MemoryService | None = None,
        reminders: ReminderClock | None = None,
        mcp: McpServers | None = None,
        files: FileContext | None = None,
    ) -> None:
        self._mcp = mcp
        self._files = files
        self._reminders = reminders
        self._memory = memory
        self._limiter = limiter
        self._model = model
        self._inbox = inbox
        self._outbox = outbox
        self._dispatcher = dispatcher
        self._courier = courier
        self._retry_after = retry_after_seconds
        self._history = history
        self._interval = interval_seconds
        self._retention_seconds = retention_days * 86400
        self._task: asyncio.Task[None] | None = None
        self._reported_given_up = 0
        self.runs = 0

    async def run_once(self) -> None:
        await self._courier.send_due()
        if self._reminders is not None:
            try:
                await self._reminders.fire_due()
            except StorageError:
                raise
            except Exception:  # never at the cost of the rest of the check
                log.exception("periodic check: firing due reminders failed")
        await self._dispatcher.resume(all_processing=False, retry_after_seconds=self._retry_after)
        cutoff = time.time() - self._retention_seconds
        inbox_rows = await self._inbox.purge_older_than(cutoff)
        outbox_rows = await self._outbox.purge_older_than(cutoff)
        history_rows = await self._history.purge_older_than(cutoff)
        if self._reminders is not None:
            await self._reminders.purge_older_than(cutoff)
        if self._files is not None:  # a file's text outlives its FILE_CONTEXT_MINUTES by one interval at most
            await self._files.purge_expired()
        if inbox_rows or outbox_rows or history_rows:
            log.info(
                "periodic check: expired %d inbox, %d outbox and %d history rows",
                inbox_rows,
                outbox_rows,
                history_rows,
            )
        if self._limiter is not None:
            await self._limiter.forget_idle()
        model = self._model
        # Checked again while failing, but not one that has just been checked (the startup check, which a
        # fast refusal finishes before this first run gets here).
        if (
            model is not None
            and model.status.state in (ModelState.FAILING, ModelState.UNCHECKED)
            and time.monotonic() - model.checked_at >= self._interval
        ):
            # Notices the fix without waiting for a person; after the deliveries, and bounded, so a hung
            # endpoint (or name server) never holds up the sweep.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(model.check("periodic check"), MODEL_CHECK_BUDGET_SECONDS)
        if self._memory is not None and not self._memory.available and self._memory.settings.vector_server:
            with contextlib.suppress(TimeoutError):  # the vector server may be back: memory on again
                await asyncio.wait_for(self._memory.reopen(), MODEL_CHECK_BUDGET_SECONDS)
        if self._mcp is not None:
            await self._mcp.revive()  # MCP servers that failed start again, in the background
        given_up = await self._inbox.count_given_up()
        if given_up != self._reported_given_up:
            self._reported_given_up = given_up
            if given_up:
                log.error(
                    "periodic check: %d message(s) failed %d times and are not retried (see earlier errors)",
                    given_up,
                    MAX_ATTEMPTS,
                )
        self.runs += 1

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except StorageError:
                pass  # the database's health logs it once a minute; recovery.py resumes the work
            except Exception:
                log.exception("periodic check failed; retrying in %g s", self._interval)
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="periodic-check")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
