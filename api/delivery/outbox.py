"""The outbox table: replies stored before they are sent, marked sent only on DingTalk's errcode 0.

Storing a reply and marking its message done is one transaction, so after a crash either the message is
answered again from the inbox or its stored reply is sent: never both, never neither. Sent rows keep
no text: body and route (which holds the session webhook) are cleared. The rows and the statements other
stores run in their own transactions are in api/delivery/outbox_rows.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from agent.storage.connection import AlsoWrite, Connection, transaction
from agent.storage.database import Database
from agent.storage.records import store_learning
from api.delivery.outbox_rows import (
    EARLIER_PART_FAILED,
    MARK_SENT,
    Channel,
    OutboxState,
    Outgoing,
    ReplyParts,
    claim_row,
    dumps_body,
    insert_reply,
    read_row,
)
from api.dingtalk.reply import Route

__all__ = ["Channel", "Outbox", "OutboxState", "Outgoing"]

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def store_reply(
        self,
        msg_id: str,
        person_id: str,
        route: Route,
        bodies: list[dict[str, Any]],
        *,
        learning: str | None = None,
        claim_seconds: float | None = None,
    ) -> list[Outgoing]:
        """Store the reply's parts and mark the message done (dropping its text), in one transaction —
        with `learning` (the message as JSON), a job to learn from it that survives a crash; with
        `claim_seconds`, the first part claimed for this process's send in that transaction too."""
        now = time.time()
        parts = ReplyParts.of(route, bodies)

        def write(conn: Connection) -> list[Outgoing]:
            with transaction(conn, pipelined=True):
                stored = insert_reply(conn, msg_id, person_id, parts, now, claim_seconds=claim_seconds)
                conn.execute(
                    "UPDATE inbox SET state = 'done', updated_at = ?, payload = NULL WHERE msg_id = ?",
                    (now, msg_id),
                )
                if learning is not None:
                    store_learning(conn, msg_id, person_id, learning)
                return stored

        return await self._db.run(write)

    async def store_notice(self, body: dict[str, Any]) -> Outgoing:
        now = time.time()

        def write(conn: Connection) -> Outgoing:
            # Behind any notice still waiting (for the rate window or DingTalk's throttling): in order.
            waiting = conn.execute(
                "SELECT MAX(next_attempt_at) FROM outbox WHERE channel = ? AND state = ?",
                (Channel.ROBOT.value, OutboxState.PENDING.value),
            ).fetchone()[0]
            due = max(now, float(waiting)) if waiting is not None else now
            row = conn.execute(
                "INSERT INTO outbox (msg_id, part, channel, body, state, attempts, next_attempt_at, "
                "created_at, updated_at) VALUES (NULL, 0, ?, ?, ?, 0, ?, ?, ?) "
                "RETURNING id, msg_id, part, channel, body, route, attempts",
                (Channel.ROBOT.value, dumps_body(body), OutboxState.PENDING.value, due, now, now),
            ).fetchone()
            return read_row(row)

        return await self._db.run(write)

    async def due_notices(self, *, limit: int = 100) -> list[Outgoing]:
        """Pending notices whose next attempt is due, oldest first."""
        now = time.time()

        def read(conn: Connection) -> list[Outgoing]:
            rows = conn.execute(
                "SELECT id, msg_id, part, channel, body, route, attempts FROM outbox "
                "WHERE state = ? AND channel = ? AND next_attempt_at <= ? "
                "ORDER BY id LIMIT ?",
                (OutboxState.PENDING.value, Channel.ROBOT.value, now, limit),
            ).fetchall()
            return [read_row(r) for r in rows]

        return await self._db.run(read)

    async def due_replies(self, *, limit: int = 100) -> list[list[Outgoing]]:
        """Replies whose first unsent part is due: each reply's pending parts, in order, oldest first.

        A later part never goes before an earlier one, whatever their retry times say.
        """
        now = time.time()

        def read(conn: Connection) -> list[list[Outgoing]]:
            pending = OutboxState.PENDING.value
            firsts = conn.execute(
                "SELECT msg_id FROM outbox AS o "
                "WHERE o.state = ? AND o.channel = ? AND o.next_attempt_at <= ? "
                "AND NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.msg_id = o.msg_id AND e.state IN (?, ?) "
                "AND e.part < o.part) ORDER BY o.id LIMIT ?",
                (pending, Channel.REPLY.value, now, pending, OutboxState.FAILED.value, limit),
            ).fetchall()
            return [
                [
                    read_row(r)
                    for r in conn.execute(
                        "SELECT id, msg_id, part, channel, body, route, attempts FROM outbox "
                        "WHERE msg_id = ? AND state = ? ORDER BY part",
                        (first[0], pending),
                    ).fetchall()
                ]
                for first in firsts
            ]

        return await self._db.run(read)

    async def status(self, row_id: int) -> tuple[OutboxState, str, float] | None:
        """(state, last error, next attempt time) of one row."""

        def read(conn: Connection) -> tuple[OutboxState, str, float] | None:
            row = conn.execute(
                "SELECT state, last_error, next_attempt_at FROM outbox WHERE id = ?", (row_id,)
            ).fetchone()
            return None if row is None else (OutboxState(row[0]), row[1] or "", float(row[2]))

        return await self._db.run(read)

    async def state_of(self, row_id: int) -> OutboxState | None:
        def read(conn: Connection) -> OutboxState | None:
            row = conn.execute("SELECT state FROM outbox WHERE id = ?", (row_id,)).fetchone()
            return None if row is None else OutboxState(row[0])

        return await self._db.run(read)

    async def claim(self, row_id: int, seconds: float, held_until: float | None = None) -> Outgoing | None:
        """Take a due pending row for one send: not due anywhere else for `seconds` (a compare-and-set,
        so two processes or two tasks never send it both). The row as it is now, or None. `held_until`:
        the claim this process made when it stored the row, renewed while nobody else took it."""
        now = time.time()
        return await self._db.run(lambda conn: claim_row(conn, row_id, seconds, now, held_until))

    async def mark_sent(self, row_id: int, also: AlsoWrite | None = None) -> None:
        """DingTalk took the row: sent, its text dropped; with `also` (the reply's turn for the history),
        in the same transaction — and if that transaction fails, the row is marked alone (its `then` not
        called: the rider is written apart), for a reply DingTalk accepted must never be sent again."""
        now = time.time()

        def update(conn: Connection) -> None:
            if also is not None:
                try:
                    with transaction(conn, pipelined=True):
                        conn.execute(MARK_SENT, (OutboxState.SENT.value, now, row_id))
                        also.write(conn)
                except Exception as exc:  # DingTalk has the reply: it must never be sent again
                    log.warning(
                        "outbox row %d: marked sent without what rode with it (%s); that is written apart",
                        row_id,
                        type(exc).__name__,
                    )
                else:
                    also.then(conn)
                    return
            conn.execute(MARK_SENT, (OutboxState.SENT.value, now, row_id))

        await self._db.run(update)

    async def mark_retry(self, row_id: int, *, at: float, error: str, count_attempt: bool = True) -> None:
        """Leave the row pending until `at`. A throttled row waits without using up its attempts."""
        now = time.time()

        def update(conn: Connection) -> None:
            conn.execute(
                "UPDATE outbox SET next_attempt_at = ?, claimed_until = NULL, last_error = ?, "
                "attempts = attempts + ?, updated_at = ? WHERE id = ? AND state = ?",
                (at, error, 1 if count_attempt else 0, now, row_id, OutboxState.PENDING.value),
            )

        await self._db.run(update)

    async def mark_card_done(self, row_id: int) -> None:
        """The card row sent and the reply's plain parts skipped, in one transaction: after a crash
        never the card and the plain reply both."""
        now = time.time()

        def update(conn: Connection) -> None:
            with transaction(conn):
                conn.execute(MARK_SENT, (OutboxState.SENT.value, now, row_id))
                conn.execute(
                    "UPDATE outbox SET state = ?, body = NULL, route = NULL, last_error = ?, updated_at = ? "
                    "WHERE state = ? AND channel = ? AND EXISTS (SELECT 1 FROM outbox AS f "
                    "WHERE f.id = ? AND f.msg_id = outbox.msg_id AND f.part < outbox.part)",
                    (
                        OutboxState.SKIPPED.value,
                        "the card carried the answer",
                        now,
                        OutboxState.PENDING.value,
                        Channel.REPLY.value,
                        row_id,
                    ),
                )

        await self._db.run(update)

    async def update_body(self, row_id: int, body: dict[str, Any]) -> None:
        def update(conn: Connection) -> None:
            conn.execute(
                "UPDATE outbox SET body = ? WHERE id = ? AND state = ?",
                (dumps_body(body), row_id, OutboxState.PENDING.value),
            )

        await self._db.run(update)

    async def skip(self, row_id: int, reason: str) -> None:
        """Mark a row not needed, its text dropped (a card that gave way to plain messages)."""
        now = time.time()

        def update(conn: Connection) -> None:
            conn.execute(
                "UPDATE outbox SET state = ?, body = NULL, route = NULL, last_error = ?, updated_at = ? "
                "WHERE id = ?",
                (OutboxState.SKIPPED.value, reason, now, row_id),
            )

        await self._db.run(update)

    async def mark_failed(self, row_id: int, error: str) -> None:
        """Give a row up. A reply's later parts go with it: they never arrive without their start."""
        now = time.time()
        failed, pending = OutboxState.FAILED.value, OutboxState.PENDING.value

        def update(conn: Connection) -> None:
            conn.execute(  # not a row another replica sent meanwhile (its lease had lapsed)
                "UPDATE outbox SET state = ?, last_error = ?, attempts = attempts + 1, updated_at = ?, "
                "claimed_until = NULL WHERE id = ? AND state = ?",
                (failed, error, now, row_id, pending),
            )
            conn.execute(
                "UPDATE outbox SET state = ?, last_error = ?, updated_at = ? "
                "WHERE state = ? AND channel = ? AND EXISTS (SELECT 1 FROM outbox AS f WHERE f.id = ? "
                "AND f.msg_id = outbox.msg_id AND f.part < outbox.part)",
                (failed, EARLIER_PART_FAILED, now, pending, Channel.REPLY.value, row_id),
            )

        await self._db.run(update)

    async def revive(self, msg_id: str, route: Route) -> int:
        """DingTalk redelivered a message whose reply is unsent: send the stored reply again, now, through
        the fresh session webhook (an AI card keeps its id). A given-up reply gets a fresh set of
        attempts. Returns rows revived."""
        now = time.time()
        pending, failed = OutboxState.PENDING.value, OutboxState.FAILED.value

        def update(conn: Connection) -> int:
            rows = conn.execute(
                "SELECT id, route FROM outbox WHERE msg_id = ? AND channel = ? AND state IN (?, ?)",
                (msg_id, Channel.REPLY.value, pending, failed),
            ).fetchall()
            revived = 0
            for row_id, stored in rows:
                card_id = Route.from_json(stored).card_id if stored else ""
                # Only while still unsent (another replica may have sent it since the read above), and
                # never brought forward while a send of it is under way (its claim): that one goes on.
                revived += conn.execute(
                    "UPDATE outbox SET route = ?, updated_at = ?, next_attempt_at = "
                    "CASE WHEN state = ? AND claimed_until > ? THEN next_attempt_at ELSE ? END, "
                    "attempts = CASE WHEN state = ? THEN 0 ELSE attempts END, state = ? "
                    "WHERE id = ? AND state IN (?, ?)",
                    (
                        replace(route, card_id=card_id).to_json(),
                        now,
                        pending,
                        now,
                        now,
                        failed,
                        pending,
                        row_id,
                        pending,
                        failed,
                    ),
                ).rowcount
            return revived

        return await self._db.run(update)

    async def retry(self, row_id: int) -> int:
        """An operator asks for a given-up row to be tried again (the console): it and, for a reply, every
        part given up with it go back to pending with fresh attempts, due now. Returns rows revived (0: the
        row is not given up: sent meanwhile, or retried already)."""
        now = time.time()
        pending, failed = OutboxState.PENDING.value, OutboxState.FAILED.value
        revive = (
            "UPDATE outbox SET state = ?, attempts = 0, next_attempt_at = ?, updated_at = ? WHERE state = ? "
        )

        def update(conn: Connection) -> int:
            with transaction(conn):
                row = conn.execute(
                    "SELECT msg_id, channel FROM outbox WHERE id = ? AND state = ? AND body IS NOT NULL",
                    (row_id, failed),
                ).fetchone()
                if row is None:
                    return 0
                if row[1] == Channel.REPLY.value and row[0]:  # the whole reply, in its order
                    return int(
                        conn.execute(
                            revive + "AND msg_id = ? AND channel = ? AND body IS NOT NULL",
                            (pending, now, now, failed, row[0], Channel.REPLY.value),
                        ).rowcount
                    )
                return int(conn.execute(revive + "AND id = ?", (pending, now, now, failed, row_id)).rowcount)

        return await self._db.run(update)

    async def update_route(self, row_id: int, route: Route) -> None:
        def update(conn: Connection) -> None:
            conn.execute(  # never back onto a sent row: its route (a credential) was cleared
                "UPDATE outbox SET route = ? WHERE id = ? AND state = ?",
                (route.to_json(), row_id, OutboxState.PENDING.value),
            )

        await self._db.run(update)

    async def pause_channel(self, channel: Channel, until: float) -> None:
        """Hold every pending row of `channel` until `until` (DingTalk throttled the robot)."""

        def update(conn: Connection) -> None:
            conn.execute(
                "UPDATE outbox SET next_attempt_at = ? "
                "WHERE state = ? AND channel = ? AND next_attempt_at < ?",
                (until, OutboxState.PENDING.value, channel.value, until),
            )

        await self._db.run(update)

    async def sent_since(self, channel: Channel, since: float) -> list[float]:
        """When rows of `channel` were sent after `since` (oldest first): the rate window."""

        def read(conn: Connection) -> list[float]:
            rows = conn.execute(
                "SELECT updated_at FROM outbox WHERE state = ? AND channel = ? AND updated_at > ? "
                "ORDER BY updated_at",
                (OutboxState.SENT.value, channel.value, since),
            ).fetchall()
            return [float(r[0]) for r in rows]

        return await self._db.run(read)

    async def count(self, state: OutboxState) -> int:
        def read(conn: Connection) -> int:
            return int(
                conn.execute("SELECT COUNT(*) FROM outbox WHERE state = ?", (state.value,)).fetchone()[0]
            )

        return await self._db.run(read)

    async def purge_older_than(self, cutoff: float) -> int:
        """Drop sent and failed rows last touched before `cutoff`; pending rows stay until sent or failed."""

        def delete(conn: Connection) -> int:
            return conn.execute(
                "DELETE FROM outbox WHERE updated_at < ? AND state <> ?", (cutoff, OutboxState.PENDING.value)
            ).rowcount

        return await self._db.run(delete)
