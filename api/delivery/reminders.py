"""Reminders fired on time, exactly once, where they were asked.

A timer is armed for the soonest due reminder and re-armed on every change (here, or on another replica:
NOTIFY dingbot_reminders); the periodic check fires whatever is due too, the safety net after a restart or
a clock jump. A firing claims the due row (a compare-and-set on its due time) and writes its message to
the outbox in one transaction, so of two checks at once exactly one fires it, and a crash after the
commit leaves a stored message the courier sends. Where it goes: the session webhook while it is valid,
then the OpenAPI send (one-to-one to the person, or the group with an @ of them) — and when neither will
exist at the due time, the person is told when they set it (ReminderReach)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.messages import IncomingMessage, Reply
from agent.observe import NoObserver, Observer
from agent.prompts.loader import PromptSet
from agent.settings.config import Settings
from agent.storage.connection import Connection, transaction
from agent.storage.database import Database, Listener
from agent.storage.health import StorageError
from agent.tools.reminders import CHANNEL, Firing, ReminderBook, claim_due
from agent.tools.toolbox import RouteProblem, fired_text
from api.delivery.courier import Courier
from api.delivery.outbox_rows import Outgoing, ReplyParts, insert_reply
from api.dingtalk.reply import REPLY_MAX_BYTES, Route, build_reply_bodies

log = logging.getLogger(__name__)
WEBHOOK_MARGIN_MS = 30_000  # as the courier: a webhook this close to its expiry is not used
SENDS_AT_ONCE = 16


class ReminderReach:
    """Whether a reminder will reach the person at its due time, from the settings and the message."""

    def __init__(self, settings: Settings) -> None:
        self._openapi = bool(settings.dingtalk_client_id and settings.dingtalk_client_secret is not None)
        self._robot_code = settings.dingtalk_robot_code or settings.dingtalk_client_id or ""

    def problem(self, message: IncomingMessage, due_at: float, repeats: bool) -> RouteProblem | None:
        expires = message.reply_url_expires_ms
        webhook_lasts = bool(message.reply_url) and (
            expires is None or expires - WEBHOOK_MARGIN_MS > due_at * 1000
        )
        if webhook_lasts and not repeats:
            return None
        if not self._openapi:
            return RouteProblem("no_app_credentials", settings="DINGTALK_CLIENT_ID 和 DINGTALK_CLIENT_SECRET")
        if not (message.bot_id or self._robot_code):
            return RouteProblem("no_robot_code", settings="DINGTALK_ROBOT_CODE")
        if not message.is_group and not message.sender_staff_id:
            before = (expires - WEBHOOK_MARGIN_MS) / 1000 if expires and not repeats else None
            return RouteProblem("external_user", before=before)
        return None


@dataclass(frozen=True, slots=True)
class _Fired:
    firing: Firing
    parts: list[Outgoing]


class ReminderClock:
    def __init__(
        self,
        *,
        book: ReminderBook,
        database: Database,
        courier: Courier,
        prompts_for: Callable[[IncomingMessage], PromptSet],
        settings: Settings,
        observer: Observer | None = None,
    ) -> None:
        self._book = book
        self._db = database
        self._courier = courier
        self._prompts_for = prompts_for
        self._grace = settings.reminder_grace_seconds
        self._interval = settings.check_interval_seconds
        self._robot_code = settings.dingtalk_robot_code or settings.dingtalk_client_id or ""
        self._observer: Observer = observer or NoObserver()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Listener | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(SENDS_AT_ONCE)
        self.fired = 0

    def rearm(self) -> None:
        """Something changed (a reminder set or cancelled): look at the soonest due time again."""
        self._wake.set()

    def start(self) -> None:
        self._book.on_change(self.rearm)
        if not self._db.single_owner:  # another replica's reminders re-arm this timer too
            loop = asyncio.get_running_loop()

            def heard(_: str = "") -> None:  # on the listener's thread
                loop.call_soon_threadsafe(self.rearm)

            self._listener = self._db.listen(CHANNEL, heard, heard, lambda: None)
        self._task = asyncio.create_task(self._loop(), name="reminder-clock")

    async def stop(self) -> None:
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)  # joins its thread: not on the event loop
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            wait = self._interval
            try:
                await self.fire_due()
                due = await self._book.next_due()
                if due is not None:
                    wait = min(max(due - self._book.clock(), 0.0), self._interval)
            except StorageError:
                pass  # the database's health logs it; the next round (or the periodic check) tries again
            except Exception:
                log.exception("reminders: the timer failed; trying again in %g s", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def fire_due(self) -> int:
        """Fire every reminder due now; their messages are stored before this returns and sent in the
        background. How many fired (dropped ones included)."""
        now = self._book.clock()

        def work(conn: Connection) -> list[_Fired]:
            fired: list[_Fired] = []
            with transaction(conn):
                for firing in claim_due(conn, now, self._grace):
                    if firing.dropped:
                        fired.append(_Fired(firing, []))
                        continue
                    origin = firing.reminder.origin
                    route = Route.for_message(origin, self._robot_code)
                    reply = Reply(fired_text(self._prompts_for(origin), firing))
                    bodies = build_reply_bodies(origin, reply, REPLY_MAX_BYTES)
                    # the outbox runs on this machine's clock (the book's may be a test's)
                    parts = ReplyParts.of(route, bodies)
                    stored = insert_reply(conn, firing.key, origin.person_id, parts, time.time())
                    fired.append(_Fired(firing, stored))
            return fired

        fired = await self._db.run(work)
        for item in fired:
            self._report(item.firing)
            if item.parts:
                task = asyncio.create_task(self._send(item.parts), name=f"reminder-{item.firing.key}")
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
        self.fired += len(fired)
        return len(fired)

    async def purge_older_than(self, cutoff: float) -> int:
        return await self._book.purge_older_than(cutoff)

    def _report(self, firing: Firing) -> None:
        reminder = firing.reminder
        if firing.dropped:
            self._observer.reminder_fired(firing.late_seconds, "dropped")
            log.warning(
                "reminder %d dropped: due %.0f s ago, past REMINDER_GRACE_SECONDS=%g (the service was down)",
                reminder.id,
                firing.late_seconds,
                self._grace,
            )
            return
        self._observer.reminder_fired(firing.late_seconds, "sent")
        log.info("reminder %d fired %.2f s after its due time", reminder.id, firing.late_seconds)

    async def _send(self, parts: list[Outgoing]) -> None:
        async with self._slots:
            try:
                await self._courier.deliver(parts)
            except StorageError:
                pass  # stored: the periodic check sends it once the database works
            except Exception:
                log.exception("reminder %s: send failed; the periodic check tries again", parts[0].msg_id)
