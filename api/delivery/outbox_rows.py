"""The outbox's rows and the statements that store and claim them inside a caller's transaction (a reply
stored with its message done, a fired reminder)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from agent.storage.connection import Connection
from api.dingtalk.reply import Route


class Channel(StrEnum):
    REPLY = "reply"  # an answer to a message: session webhook, then the OpenAPI send
    ROBOT = "robot"  # a proactive notice through the custom-robot webhook


class OutboxState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # not needed: a card carried the answer, or a card gave way to plain messages


@dataclass(frozen=True, slots=True)
class Outgoing:
    id: int
    msg_id: str | None
    part: int
    channel: Channel
    body: dict[str, Any]
    route: Route | None
    attempts: int
    # Set when the row was claimed for this process in the transaction that stored it (store_reply): the
    # courier sends it without claiming it again while that claim has time left.
    claimed_until: float | None = None


EARLIER_PART_FAILED = "an earlier part of this reply was not sent"
# Sent rows keep no text: the body and the route (which holds the session webhook) are cleared.
MARK_SENT = (
    "UPDATE outbox SET state = ?, body = NULL, route = NULL, last_error = NULL, claimed_until = NULL, "
    "attempts = attempts + 1, updated_at = ? WHERE id = ?"
)


def read_row(row: tuple[Any, ...]) -> Outgoing:
    return Outgoing(
        id=int(row[0]),
        msg_id=row[1],
        part=int(row[2]),
        channel=Channel(row[3]),
        body=json.loads(row[4]),
        route=Route.from_json(row[5]) if row[5] else None,
        attempts=int(row[6]),
    )


def dumps_body(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ReplyParts:
    """A reply's parts and route, encoded once, before the transaction that stores them (a SQLite writer
    holds the database's lock for the whole transaction: nothing slow belongs inside it)."""

    route: Route
    bodies: list[dict[str, Any]]
    encoded: list[str]
    route_json: str

    @classmethod
    def of(cls, route: Route, bodies: list[dict[str, Any]]) -> ReplyParts:
        return cls(route, bodies, [dumps_body(body) for body in bodies], route.to_json())


def insert_reply(
    conn: Connection,
    msg_id: str,
    person_id: str,
    parts: ReplyParts,
    now: float,
    *,
    claim_seconds: float | None = None,
) -> list[Outgoing]:
    """Inside the caller's transaction: a reply's parts, pending (a part already stored stays as it is),
    the first claimed for `claim_seconds` when given. Returns the reply's pending parts in order: as
    inserted, or read back when the reply was stored before."""
    until = now + claim_seconds if claim_seconds is not None else None
    fresh: list[Outgoing] = []
    for part, (body, encoded) in enumerate(zip(parts.bodies, parts.encoded, strict=True)):
        claimed = until if part == 0 else None
        inserted = conn.execute(
            "INSERT INTO outbox (msg_id, part, channel, person_id, body, route, state, attempts, "
            "next_attempt_at, claimed_until, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?) ON CONFLICT (msg_id, part) DO NOTHING RETURNING id",
            (
                msg_id,
                part,
                Channel.REPLY.value,
                person_id,
                encoded,
                parts.route_json,
                OutboxState.PENDING.value,
                claimed or now,
                claimed,
                now,
                now,
            ),
        ).fetchall()  # to the end: SQLite's statement is over once its rows are read
        if inserted:
            row_id = int(inserted[0][0])
            fresh.append(Outgoing(row_id, msg_id, part, Channel.REPLY, body, parts.route, 0, claimed))
    if len(fresh) == len(parts.bodies):
        return fresh
    if claim_seconds is None:  # stored before (a message answered again): the parts as they are now
        return pending_parts(conn, msg_id)
    return pending_parts_claimed(conn, msg_id, claim_seconds, now)


def pending_parts(conn: Connection, msg_id: str) -> list[Outgoing]:
    rows = conn.execute(
        "SELECT id, msg_id, part, channel, body, route, attempts FROM outbox "
        "WHERE msg_id = ? AND state = ? ORDER BY part",
        (msg_id, OutboxState.PENDING.value),
    ).fetchall()
    return [read_row(r) for r in rows]


_CLAIM = (  # one statement: the compare-and-set and the row as it is now
    "UPDATE outbox SET next_attempt_at = ?, claimed_until = ?, updated_at = ? "
    "WHERE id = ? AND state = ? AND (next_attempt_at <= ? OR claimed_until = ?) "
    "RETURNING id, msg_id, part, channel, body, route, attempts"
)


def claim_row(
    conn: Connection, row_id: int, seconds: float, now: float, held_until: float | None = None
) -> Outgoing | None:
    """Take a due pending row for one send: not due anywhere else for `seconds`. The row as it is now.
    `held_until`: this process's own claim on it (made when it was stored), renewed if nobody took it."""
    until = now + seconds
    rows = conn.execute(
        _CLAIM, (until, until, now, row_id, OutboxState.PENDING.value, now, held_until)
    ).fetchall()  # to the end: SQLite's statement (and its write) is over once its rows are read
    return replace(read_row(rows[0]), claimed_until=until) if rows else None


def pending_parts_claimed(conn: Connection, msg_id: str, seconds: float, now: float) -> list[Outgoing]:
    """A reply's pending parts, the first of them claimed for this process (`claimed_until` set): the
    part about to be sent, without a transaction of its own. The later parts are claimed in their turn
    (a first part that fails must not leave them held for a whole claim)."""
    parts = pending_parts(conn, msg_id)
    if parts and (first := claim_row(conn, parts[0].id, seconds, now)) is not None:
        parts[0] = first
    return parts
