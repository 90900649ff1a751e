"""The periodic check, every CHECK_INTERVAL_SECONDS: expire old rows, report stuck messages."""

from __future__ import annotations

import asyncio
import logging
import time

from agent.history import HistoryStore
from agent.limits import RateLimiter
from api.inbox import Inbox

log = logging.getLogger(__name__)


class PeriodicCheck:
    def __init__(
        self,
        *,
        inbox: Inbox,
        history: HistoryStore,
        interval_seconds: float,
        retention_days: float,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._limiter = limiter
        self._inbox = inbox
        self._history = history
        self._interval = interval_seconds
        self._retention_seconds = retention_days * 86400
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    async def run_once(self) -> None:
        cutoff = time.time() - self._retention_seconds
        inbox_rows = await self._inbox.purge_older_than(cutoff)
        history_rows = await self._history.purge_older_than(cutoff)
        if inbox_rows or history_rows:
            log.info("periodic check: expired %d inbox and %d history rows", inbox_rows, history_rows)
        if self._limiter is not None:
            self._limiter.forget_idle()
        stuck = await self._inbox.count_stuck()
        if stuck:
            log.warning(
                "periodic check: %d message(s) stopped mid-answer (answered when DingTalk redelivers them)",
                stuck,
            )
        self.runs += 1

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
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
