"""Reminders in the `reminders` table: add (checked, keyed by the message that asked), list, cancel, and
`claim_due` — the due row claimed by a compare-and-set, for the caller to write its message to the outbox
in the same transaction (api/delivery/reminders.py, `dingbot chat`). When they are due: tools/when.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.messages import IncomingMessage, message_from_json, message_to_json
from agent.storage.connection import Connection, transaction
from agent.storage.database import Database
from agent.tools.when import (
    ReminderProblem,
    Repeat,
    check_due,
    first_occurrence,
    next_occurrence,
    parse_repeat,
    resolve_when,
)

MAX_TEXT_CHARS = 500
CHANNEL = "dingbot_reminders"  # NOTIFY: another replica's reminders changed (its timer re-arms)
CHAT = "chat:"  # person ids of `dingbot chat`: their reminders fire in the chat, not through DingTalk
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reminder:
    id: int
    person_id: str
    text: str
    due_at: float  # epoch seconds of the next firing
    repeat: Repeat | None
    anchor: datetime  # the first due time, local (the recurrence's start)
    origin: IncomingMessage  # where it was asked: the conversation, the person (no message text)
    fired: int = 0

    def due_local(self) -> datetime:
        return datetime.fromtimestamp(self.due_at, self.anchor.tzinfo)


@dataclass(frozen=True, slots=True)
class Plan:
    """A checked reminder, not stored yet."""

    due: datetime
    text: str
    repeat: Repeat | None


@dataclass(frozen=True, slots=True)
class Firing:
    """A due reminder claimed for one firing: its message is to be written in the same transaction."""

    reminder: Reminder
    due_at: float  # the occurrence that fired
    late_seconds: float
    dropped: bool  # missed by more than REMINDER_GRACE_SECONDS: not sent, logged

    @property
    def key(self) -> str:
        """The outbox key of this occurrence: one message per reminder and due time, whoever fires it."""
        return f"reminder:{self.reminder.id}:{round(self.due_at)}"


_COLUMNS = "id, person_id, text, due_at, repeat, anchor, timezone, origin, fired"
_BY_SOURCE = f"SELECT {_COLUMNS} FROM reminders WHERE source = ?"  # noqa: S608
_BY_CANCELLER = f"SELECT {_COLUMNS} FROM reminders WHERE cancelled_by = ?"  # noqa: S608
_INSERT = (
    "INSERT INTO reminders (person_id, conversation_id, text, due_at, repeat, anchor, timezone, origin, "
    "state, fired, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', 0, ?, ?, ?) "
    "RETURNING id, person_id, text, due_at, repeat, anchor, timezone, origin, fired"
)


def _reminder(row: tuple[Any, ...]) -> Reminder:
    tz = ZoneInfo(str(row[6]))
    return Reminder(
        id=int(row[0]),
        person_id=str(row[1]),
        text=str(row[2]),
        due_at=float(row[3]),
        repeat=Repeat(row[4]) if row[4] else None,
        anchor=datetime.fromisoformat(str(row[5])).replace(tzinfo=tz),
        origin=message_from_json(str(row[7])),
        fired=int(row[8]),
    )


def _following(reminder: Reminder, now: float) -> float:
    """The next occurrence after `now`, strictly later in real time: a wall time repeated when the clocks
    go back (02:30 twice) must not give the same instant again."""
    assert reminder.repeat is not None
    at = next_occurrence(
        reminder.repeat, reminder.anchor, datetime.fromtimestamp(now, reminder.anchor.tzinfo)
    )
    while at.timestamp() <= max(now, reminder.due_at):
        at = next_occurrence(reminder.repeat, reminder.anchor, at)
    return at.timestamp()


def claim_due(
    conn: Connection, now: float, grace_seconds: float, *, person_id: str | None = None, limit: int = 200
) -> list[Firing]:
    """Inside the caller's transaction: take every reminder due by `now` for one firing each. A reminder
    moves to its next occurrence (or ends) by a compare-and-set on its due time, so of two checks
    running at once (two replicas, the timer and the periodic check) exactly one fires it.

    `person_id`: only that person's (`dingbot chat` fires its own); without it, everyone's except those
    set in `dingbot chat`, which has no way to DingTalk. A row that cannot be read is ended with a
    warning, never left to block the others."""
    who, params = ("person_id = ?", (person_id,)) if person_id else ("person_id NOT LIKE ?", (f"{CHAT}%",))
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM reminders WHERE state = 'active' AND due_at <= ? AND {who} "  # noqa: S608
        "ORDER BY due_at, id LIMIT ?",
        (now, *params, limit),
    ).fetchall()
    firings: list[Firing] = []
    for row in rows:
        try:
            reminder = _reminder(row)
            following = _following(reminder, now) if reminder.repeat is not None else None
        except Exception as exc:  # written by another version, a time zone this machine lacks
            log.warning("reminder %s cannot be read (%s): ended without firing", row[0], type(exc).__name__)
            conn.execute("UPDATE reminders SET state = 'done', updated_at = ? WHERE id = ?", (now, row[0]))
            continue
        late = now - reminder.due_at
        if following is None:
            moved = conn.execute(
                "UPDATE reminders SET state = 'done', fired = fired + 1, origin = ?, updated_at = ? "
                "WHERE id = ? AND state = 'active' AND due_at = ?",
                (_spent_origin(reminder.origin), now, reminder.id, reminder.due_at),
            ).rowcount
        else:
            moved = conn.execute(
                "UPDATE reminders SET due_at = ?, fired = fired + 1, updated_at = ? "
                "WHERE id = ? AND state = 'active' AND due_at = ?",
                (following, now, reminder.id, reminder.due_at),
            ).rowcount
        if moved == 1:
            firings.append(Firing(reminder, reminder.due_at, max(late, 0.0), dropped=late > grace_seconds))
    return firings


def _spent_origin(origin: IncomingMessage) -> str:
    """A fired one-off reminder keeps no session webhook (a credential it no longer needs)."""
    return message_to_json(replace(origin, reply_url=""))


class ReminderBook:
    """A person's reminders: add (validated), list, cancel — always one person's own — and the next due
    time for the timer. `on_change` hears every change made here (the timer re-arms)."""

    def __init__(
        self,
        db: Database,
        *,
        timezone: ZoneInfo,
        max_per_person: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self.timezone = timezone
        self._max = max_per_person
        self.clock = clock
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def _announce(self, conn: Connection) -> None:
        """Inside the change's transaction: other replicas' timers hear of it at commit (PostgreSQL)."""
        if not self._db.single_owner:
            conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, ""))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), self.timezone)

    def plan(self, when: str, text: str, repeat: str | None) -> Plan:
        """Check a reminder before it is stored. Raises ReminderProblem (a sentence to say)."""
        text = " ".join(text.split())[:MAX_TEXT_CHARS]
        if not text:
            raise ReminderProblem("no_text")
        every = parse_repeat(repeat)
        now = self.now()
        due = resolve_when(when, now)
        if every is not None and due < now:  # "每天早上9点" said at 10:05: from tomorrow 09:00
            due = next_occurrence(every, due, now)
        due = first_occurrence(every, due)
        check_due(due, now)
        return Plan(due, text, every)

    async def add(self, message: IncomingMessage, plan: Plan, *, source: str | None = None) -> Reminder:
        """Store a planned reminder for the speaker of `message` (at most MAX_REMINDERS_PER_PERSON).
        `source` names the message and call that asked: asked again (the message answered a second time
        after a crash), the reminder already stored is returned, not a second one."""
        due, text, every = plan.due, plan.text, plan.repeat
        origin = message_to_json(replace(message, text=""))
        stamp = self.clock()

        def write(conn: Connection) -> Reminder | None:
            with transaction(conn):
                if source is not None:
                    row = conn.execute(_BY_SOURCE, (source,)).fetchone()
                    if row is not None:
                        return _reminder(row)
                count = conn.execute(
                    "SELECT COUNT(*) FROM reminders WHERE person_id = ? AND state = 'active'",
                    (message.person_id,),
                ).fetchone()[0]
                if int(count) >= self._max:
                    return None
                row = conn.execute(
                    _INSERT,
                    (
                        message.person_id,
                        message.conversation_id,
                        text,
                        due.timestamp(),
                        every.value if every else None,
                        due.replace(tzinfo=None).isoformat(),
                        str(self.timezone.key),
                        origin,
                        source,
                        stamp,
                        stamp,
                    ),
                ).fetchone()
                self._announce(conn)
                return _reminder(row)

        reminder = await self._db.run(write)
        if reminder is None:
            raise ReminderProblem("too_many", limit=self._max)
        self._changed()
        return reminder

    async def active(self, person_id: str, *, in_group: str | None = None) -> list[Reminder]:
        """The person's pending reminders, soonest first; `in_group` (a group's conversation id): only
        those set in that group — a group never hears what someone set privately or elsewhere."""
        where, params = "person_id = ? AND state = 'active'", [person_id]
        if in_group is not None:
            where, params = where + " AND conversation_id = ?", [person_id, in_group]

        def read(conn: Connection) -> list[Reminder]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM reminders WHERE {where} ORDER BY due_at, id",  # noqa: S608
                tuple(params),
            ).fetchall()
            return [_reminder(r) for r in rows]

        return await self._db.run(read)

    async def visible(self, message: IncomingMessage) -> list[Reminder]:
        """What the speaker of `message` sees listed there: all of theirs one-to-one, a group's own in it."""
        return await self.active(
            message.person_id, in_group=message.conversation_id if message.is_group else None
        )

    async def cancel(self, message: IncomingMessage, number: int, *, source: str) -> Reminder | None:
        """Cancel the speaker's `number`th reminder as `visible` lists them (1 = soonest); None when
        there is no such pending reminder. `source` names the message (and call) that asked: asked again,
        the reminder it cancelled then is returned and no other one is touched."""
        group = message.conversation_id if message.is_group else None
        where = "person_id = ? AND state = 'active'" + (" AND conversation_id = ?" if group else "")
        params = (message.person_id, group) if group else (message.person_id,)

        def write(conn: Connection) -> Reminder | None:
            with transaction(conn):
                done = conn.execute(_BY_CANCELLER, (source,)).fetchone()
                if done is not None:
                    return _reminder(done)
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM reminders WHERE {where} ORDER BY due_at, id",  # noqa: S608
                    params,
                ).fetchall()
                if not 1 <= number <= len(rows):
                    return None
                return self._cancel_row(conn, _reminder(rows[number - 1]), source)

        cancelled = await self._db.run(write)
        if cancelled is not None:
            self._changed()
        return cancelled

    async def all_active(self, limit: int = 200) -> list[Reminder]:
        """Everyone's pending reminders, soonest first (the console)."""

        def read(conn: Connection) -> list[Reminder]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM reminders WHERE state = 'active' ORDER BY due_at, id LIMIT ?",  # noqa: S608
                (limit,),
            ).fetchall()
            readable = []
            for row in rows:
                try:
                    readable.append(_reminder(row))
                except Exception as exc:  # another version's row, a time zone this machine lacks
                    log.warning(
                        "reminder %s cannot be read here (%s): not listed", row[0], type(exc).__name__
                    )
            return readable

        return await self._db.run(read)

    async def cancel_by_id(self, reminder_id: int, *, source: str) -> Reminder | None:
        """Cancel one pending reminder by its id (an operator, from the console); None when it is not
        pending any more (fired, cancelled, or never was)."""

        def write(conn: Connection) -> Reminder | None:
            with transaction(conn):
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM reminders WHERE id = ? AND state = 'active'",  # noqa: S608
                    (reminder_id,),
                ).fetchone()
                if row is None:
                    return None
                return self._cancel_row(conn, _reminder(row), source)

        cancelled = await self._db.run(write)
        if cancelled is not None:
            self._changed()
        return cancelled

    def _cancel_row(self, conn: Connection, chosen: Reminder, source: str) -> Reminder | None:
        """Inside the caller's transaction: cancel `chosen` unless it fired meanwhile (another replica);
        the session webhook it kept is dropped. None when it was no longer pending."""
        taken = conn.execute(
            "UPDATE reminders SET state = 'cancelled', cancelled_by = ?, origin = ?, updated_at = ? "
            "WHERE id = ? AND state = 'active'",
            (source, _spent_origin(chosen.origin), self.clock(), chosen.id),
        ).rowcount
        if taken != 1:
            return None
        self._announce(conn)
        return chosen

    async def next_due(self) -> float | None:
        """When the soonest pending reminder the service fires is due (epoch seconds): anyone's but those
        of `dingbot chat`, which fires its own."""

        def read(conn: Connection) -> float | None:
            row = conn.execute(
                "SELECT MIN(due_at) FROM reminders WHERE state = 'active' AND person_id NOT LIKE ?",
                (f"{CHAT}%",),
            ).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._db.run(read)

    async def purge_older_than(self, cutoff: float) -> int:
        """Fired and cancelled reminders, once RETENTION_DAYS old."""

        def delete(conn: Connection) -> int:
            return conn.execute(
                "DELETE FROM reminders WHERE state <> 'active' AND updated_at < ?", (cutoff,)
            ).rowcount

        return await self._db.run(delete)
