"""The inbox table: one row per accepted msgId, holding the message until it is answered.

The claim is the atomic dedupe and the durable store in one statement: once it returns True the message
survives a crash, and the dispatcher resumes it on the next start.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from enum import StrEnum

from agent.messages import IncomingMessage, message_from_json, message_to_json
from agent.storage.connection import Connection
from agent.storage.database import Database

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a message whose processing failed this often is left for an operator (logged)


class InboxState(StrEnum):
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Unfinished:
    message: IncomingMessage
    state: str
    updated_at: float


class Inbox:
    def __init__(self, db: Database, *, lease_seconds: float) -> None:
        self._db = db
        self.lease_seconds = lease_seconds  # a `processing` row not renewed for this long is orphaned

    async def claim(self, message: IncomingMessage, *, now: float | None = None) -> bool:
        """Store a message under its msgId; False while it is being handled or once it was answered.

        One upsert, no read first, so concurrent duplicates (on any replica) cannot both win. A row is
        claimed again when its processing failed, or when its claim was not renewed for `lease_seconds`
        (the process answering it died), so DingTalk's redelivery of it is answered.
        """
        now = time.time() if now is None else now  # the row's updated_at: a later `take` compares it
        payload = message_to_json(message)

        def upsert(conn: Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO inbox (msg_id, state, received_at, updated_at, person_id, payload, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, 0) "
                "ON CONFLICT (msg_id) DO UPDATE SET state = excluded.state, "
                "updated_at = excluded.updated_at, payload = excluded.payload, attempts = 0 "
                "WHERE inbox.state = ? OR (inbox.state = ? AND inbox.updated_at < ?)",
                (
                    message.message_id,
                    InboxState.PROCESSING.value,
                    now,
                    now,
                    message.person_id,
                    payload,
                    InboxState.FAILED.value,
                    InboxState.PROCESSING.value,
                    now - self.lease_seconds,
                ),
            )
            return cursor.rowcount == 1

        return await self._db.run_for_request(upsert)

    async def mark_failed(self, msg_id: str) -> None:
        """Processing failed (or was cancelled): the message waits for a retry, its text kept.

        Only while it is `processing`: once its reply is stored (done), the outbox owns it, and answering
        it again would send a second reply.
        """
        now = time.time()

        def update(conn: Connection) -> None:
            conn.execute(
                "UPDATE inbox SET state = ?, updated_at = ?, attempts = attempts + 1 "
                "WHERE msg_id = ? AND state = ?",
                (InboxState.FAILED.value, now, msg_id, InboxState.PROCESSING.value),
            )

        await self._db.run(update)

    async def mark_done(self, msg_id: str) -> None:
        """Answered without a reply to send (nothing to store in the outbox); the text is dropped."""
        now = time.time()

        def update(conn: Connection) -> None:
            conn.execute(
                "UPDATE inbox SET state = ?, updated_at = ?, payload = NULL WHERE msg_id = ?",
                (InboxState.DONE.value, now, msg_id),
            )

        await self._db.run(update)

    async def unfinished(self, *, all_processing: bool, retry_after_seconds: float) -> list[Unfinished]:
        """Messages to resume, oldest first.

        `all_processing` (one process owns the database): at startup every `processing` row belongs to a
        process that is gone. Otherwise only rows whose claim was not renewed for `lease_seconds` count.
        Failed rows are retried after `retry_after_seconds`, up to MAX_ATTEMPTS; a row the claim is about
        to take again is not touched.
        """
        now = time.time()
        processing_before = now if all_processing else now - self.lease_seconds

        def read(conn: Connection) -> list[tuple[str, str | None, str, float]]:
            rows = conn.execute(
                "SELECT msg_id, payload, state, updated_at FROM inbox WHERE "
                "(state = ? AND updated_at <= ?) OR (state = ? AND attempts < ? AND updated_at <= ?) "
                "ORDER BY received_at",
                (
                    InboxState.PROCESSING.value,
                    processing_before,
                    InboxState.FAILED.value,
                    MAX_ATTEMPTS,
                    now - retry_after_seconds,
                ),
            ).fetchall()
            return [(str(r[0]), r[1], str(r[2]), float(r[3])) for r in rows]

        found: list[Unfinished] = []
        for msg_id, payload, state, updated_at in await self._db.run(read):
            if payload is None:
                continue  # stored by a version without payloads: only a redelivery can answer it
            try:
                found.append(Unfinished(message_from_json(payload), state, updated_at))
            except (ValueError, TypeError) as exc:
                log.warning("message %s: stored payload unreadable (%s), not resumed", msg_id, exc)
        return found

    async def take(self, item: Unfinished) -> bool:
        """Claim an unfinished row for resuming, only if nobody changed it since it was read.

        The same compare-and-set as the callback's claim: a redelivery and a resume cannot both win.
        """
        now = time.time()

        def update(conn: Connection) -> bool:
            cursor = conn.execute(
                "UPDATE inbox SET state = ?, updated_at = ? "
                "WHERE msg_id = ? AND state = ? AND updated_at = ?",
                (InboxState.PROCESSING.value, now, item.message.message_id, item.state, item.updated_at),
            )
            return cursor.rowcount == 1

        return await self._db.run_for_request(update)

    async def renew(self, msg_ids: list[str]) -> None:
        """Keep the claims on messages still being answered here (see `lease_seconds`)."""
        if not msg_ids:
            return
        marks = ", ".join("?" * len(msg_ids))

        def update(conn: Connection) -> None:
            conn.execute(
                f"UPDATE inbox SET updated_at = ? WHERE state = ? AND msg_id IN ({marks})",  # noqa: S608
                (time.time(), InboxState.PROCESSING.value, *msg_ids),
            )

        await self._db.run(update)

    async def purge_older_than(self, cutoff: float) -> int:
        """Forget answered or failed msgIds last touched before `cutoff` (epoch seconds), and learning
        jobs that old (memory was off all that time: nobody will learn from them)."""

        def delete(conn: Connection) -> int:
            conn.execute("DELETE FROM learning WHERE created_at < ?", (cutoff,))
            return conn.execute(
                "DELETE FROM inbox WHERE updated_at < ? AND state <> ?", (cutoff, InboxState.PROCESSING.value)
            ).rowcount

        return await self._db.run(delete)

    async def count_given_up(self) -> int:
        """Messages whose processing failed MAX_ATTEMPTS times."""

        def count(conn: Connection) -> int:
            row = conn.execute(
                "SELECT COUNT(*) FROM inbox WHERE state = ? AND attempts >= ?",
                (InboxState.FAILED.value, MAX_ATTEMPTS),
            ).fetchone()
            return int(row[0])

        return await self._db.run(count)
