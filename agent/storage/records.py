"""Statements several stores share: the forget mark, learning jobs, a person's stored messages."""

from __future__ import annotations

import time

from agent.messages import IncomingMessage, message_from_json
from agent.storage.connection import Connection, transaction


def erase_person_messages(conn: Connection, person_id: str) -> None:
    """Stored message and reply text of one person, except what is still on its way, their reminders, the
    files they sent, every conversation summary holding their words (a group's too) and their token
    counts (/forget all)."""
    conn.execute(
        "UPDATE inbox SET payload = NULL WHERE person_id = ? AND state <> 'processing'", (person_id,)
    )
    conn.execute("DELETE FROM outbox WHERE person_id = ? AND state <> 'pending'", (person_id,))
    conn.execute("DELETE FROM learning WHERE person_id = ?", (person_id,))
    conn.execute("DELETE FROM reminders WHERE person_id = ?", (person_id,))
    conn.execute("DELETE FROM file_context WHERE person_id = ?", (person_id,))
    theirs = "SELECT scope FROM summary_people WHERE person_id = ?"
    conn.execute(f"DELETE FROM summaries WHERE scope IN ({theirs})", (person_id,))  # noqa: S608
    conn.execute(f"DELETE FROM summary_people WHERE scope IN ({theirs})", (person_id,))  # noqa: S608
    conn.execute("DELETE FROM token_usage WHERE person_id = ?", (person_id,))


def mark_forgotten(conn: Connection, person_id: str, at: float) -> None:
    """Record a "/forget all" sent at `at`: writes of anything said before it are refused from now on."""
    conn.execute(
        "INSERT INTO forgotten (person_id, at) VALUES (?, ?) ON CONFLICT (person_id) DO UPDATE "
        "SET at = CASE WHEN excluded.at > forgotten.at THEN excluded.at ELSE forgotten.at END",
        (person_id, at),
    )


def forgotten_at(conn: Connection, person_id: str) -> float:
    """When the person last asked to be forgotten; -inf when never."""
    row = conn.execute("SELECT at FROM forgotten WHERE person_id = ?", (person_id,)).fetchone()
    return float(row[0]) if row else float("-inf")


def store_learning(conn: Connection, msg_id: str, person_id: str, message: str) -> None:
    """Inside the reply's transaction: its message is to be learned from, even after a crash."""
    conn.execute(
        "INSERT INTO learning (msg_id, person_id, message, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (msg_id) DO NOTHING",
        (msg_id, person_id, message, time.time()),
    )


def pending_learning(conn: Connection) -> list[IncomingMessage]:
    rows = conn.execute("SELECT message FROM learning ORDER BY created_at").fetchall()
    return [message_from_json(str(row[0])) for row in rows]


def finish_learning(conn: Connection, msg_ids: list[str]) -> None:
    """The jobs of these messages are done (one transaction)."""
    with transaction(conn, durable=False):  # lost: learned once more after a crash, storing nothing new
        conn.executemany("DELETE FROM learning WHERE msg_id = ?", [(msg_id,) for msg_id in msg_ids])
