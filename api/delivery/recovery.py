"""After a database fault: the work it left behind resumes as soon as the database works again.

While `Database.health` has a fault (damaged, full, unwritable, failing), HTTP callbacks are answered 503
(DingTalk delivers them again) and Stream messages, already acked, are parked in memory. `StorageRecovery`
probes the database every PROBE_SECONDS — a real write, or a quick_check for a damaged file — and when a
probe succeeds, at once: messages the fault left `processing` or failed are resumed, due replies are sent
and the parked Stream messages are taken in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from agent.storage.database import Database
from agent.storage.health import StorageError
from api.delivery.courier import Courier
from api.delivery.dispatcher import Dispatcher

log = logging.getLogger(__name__)

PROBE_SECONDS = 1.0
PARKED_LIMIT = 1000  # Stream messages kept while the database fails; the oldest go first beyond this


class ParkedMessages:
    """Stream messages acked while the database could not take them in, kept until it can (in memory: lost
    only if the process stops before the database works again)."""

    def __init__(self, limit: int = PARKED_LIMIT) -> None:
        self._items: deque[str] = deque(maxlen=limit)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def park(self, data: str) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
            log.error("stream: %d acked message(s) dropped: the database failed for too long", self.dropped)
        self._items.append(data)

    def take_all(self) -> list[str]:
        items = list(self._items)
        self._items.clear()
        return items


class StorageRecovery:
    def __init__(
        self,
        *,
        database: Database,
        dispatcher: Dispatcher,
        courier: Courier,
        parked: ParkedMessages,
        retake: Callable[[str], Awaitable[object]],
        probe_seconds: float = PROBE_SECONDS,
    ) -> None:
        self._database = database
        self._dispatcher = dispatcher
        self._courier = courier
        self._parked = parked
        self._retake = retake  # takes a parked Stream message in (intake.take_in_stream)
        self._probe_seconds = probe_seconds
        self._task: asyncio.Task[None] | None = None
        self.recoveries = 0

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._probe_seconds)
            if self._database.health.ok and not self._parked:
                continue
            try:
                if await self._database.probe():
                    await self._resume()
            except StorageError:
                continue  # failed again at once: the next probe decides
            except Exception:
                log.exception("storage recovery failed; probing again in %g s", self._probe_seconds)

    async def _resume(self) -> None:
        resumed = await self._dispatcher.resume(
            all_processing=self._database.single_owner, retry_after_seconds=0.0
        )
        await self._courier.send_due()
        parked = self._parked.take_all()
        for data in parked:
            await self._retake(data)  # parked again if the database fails again
        self.recoveries += 1
        log.warning(
            "storage recovered: %d message(s) resumed, %d parked Stream message(s) taken in",
            resumed,
            len(parked),
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="storage-recovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
