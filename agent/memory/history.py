"""Short-term memory: a conversation's recent turns in the database — the window the prompt shows, at
most HISTORY_TURNS turns and HISTORY_TOKENS tokens. With summaries on, the turns past the window wait (a
bounded backlog) until agent/memory/summary.py folds them into the conversation's summary and deletes
them; without, they are deleted as the window moves on."""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.model.tokens import count_tokens
from agent.storage.connection import Connection, lock_person, transaction
from agent.storage.database import Database
from agent.storage.records import erase_person_messages, forgotten_at, mark_forgotten

BACKLOG_TURNS = 40  # turns kept past the window while they wait to be folded (a failing summary model)
TURN_OVERHEAD_TOKENS = 8  # two chat messages' framing


@dataclass(frozen=True, slots=True)
class Turn:
    human: str
    ai: str

    @property
    def tokens(self) -> int:
        return count_tokens(self.human) + count_tokens(self.ai) + TURN_OVERHEAD_TOKENS


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """A turn as stored: its rows' ids, who began it and when (for folding it into a summary)."""

    ids: tuple[int, int]
    person_id: str
    created_at: float
    turn: Turn


Row = tuple[int, str, str, str, float]  # id, person, role, content, created_at


def read_rows(conn: Connection, scope: str, turns: int) -> list[Row]:
    """The rows of a scope's newest `turns` turns, oldest first (+1 row: a human row whose answer is
    later)."""
    rows = conn.execute(
        "SELECT id, person_id, role, content, created_at FROM history WHERE scope = ? "
        "ORDER BY id DESC LIMIT ?",
        (scope, turns * 2 + 1),
    ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4])) for r in reversed(rows)]


def pair_turns(rows: list[Row]) -> list[StoredTurn]:
    """Rows into turns, paired per person: in a shared group, turns written by several replicas
    interleave."""
    turns: list[StoredTurn] = []
    pending: dict[str, tuple[int, str, float]] = {}
    for row_id, person_id, role, content, created_at in rows:
        if role == "human":
            pending[person_id] = (row_id, content, created_at)
        elif (began := pending.pop(person_id, None)) is not None:
            turns.append(StoredTurn((began[0], row_id), person_id, began[2], Turn(began[1], content)))
    return turns


class HistoryStore:
    """Turns per scope (a conversation and speaker, or a whole group). Never grows past the window, plus
    BACKLOG_TURNS when `folding` (summaries on); nothing is kept when `turns` is 0."""

    def __init__(self, db: Database, turns: int, tokens: int = 0, *, folding: bool = False) -> None:
        self._db = db
        self.turns = turns
        self.tokens = tokens  # 0: by turn count only
        self.folding = folding and turns > 0

    @property
    def _kept_turns(self) -> int:
        return self.turns + (BACKLOG_TURNS if self.folding else 0)

    def window_size(self, turns: list[Turn]) -> int:
        """How many of `turns` (oldest first) the window holds, counted from the newest. The newest turn is
        always in it, however long ("shorten point 3" after a long answer needs that answer); the prompt's
        budget and fitting to the model's own context still apply."""
        fit, spent = 0, 0
        for turn in reversed(turns[-self.turns :] if self.turns else []):
            spent += turn.tokens if self.tokens else 0
            if self.tokens and spent > self.tokens and fit > 0:
                break
            fit += 1
        return fit

    async def stored(self, scope: str, newest: int | None = None) -> list[StoredTurn]:
        """The scope's stored turns, oldest first: every one (the window and what waits to be folded), or
        only the `newest` (what the window can hold: a reply's prompt never reads the backlog)."""
        limit = self._kept_turns if newest is None else newest
        return pair_turns(await self._db.run(lambda conn: read_rows(conn, scope, limit)))

    def window(self, turns: list[StoredTurn]) -> list[Turn]:
        """The window of a scope's newest stored turns (read with `read_rows(conn, scope, self.turns)`)."""
        kept = [t.turn for t in turns]
        return kept[len(kept) - self.window_size(kept) :]

    async def recent(self, scope: str) -> list[Turn]:
        """The window: the newest turns, at most `turns` and `tokens`, oldest first."""
        if self.turns == 0:
            return []
        return self.window(await self.stored(scope, newest=self.turns))

    async def append(self, scope: str, turn: Turn, person_id: str, said_at: float) -> bool:
        """Keep a turn the person began at `said_at`; refused (False) when they asked to be forgotten
        after saying it — checked in the same transaction as the write."""
        return await self.keep(scope, turn, person_id, said_at, read_back=False) is not None

    async def keep(
        self, scope: str, turn: Turn, person_id: str, said_at: float, *, read_back: bool = True
    ) -> list[StoredTurn] | None:
        """`append`, and with `read_back` the scope's stored turns after it (what a summary fold needs,
        without a round trip of its own): None when refused, else the turns ([] without `read_back`)."""
        now = time.time()

        def write(conn: Connection) -> list[StoredTurn] | None:
            with transaction(conn, durable=False, pipelined=True):
                if not self.keep_in(conn, scope, turn, person_id, said_at, now):
                    return None
            return self.stored_in(conn, scope) if read_back else []

        return await self._db.run(write)

    def keep_in(
        self, conn: Connection, scope: str, turn: Turn, person_id: str, said_at: float, now: float
    ) -> bool:
        """Inside the caller's transaction: keep the turn (False: refused, the person asked to be forgotten
        after saying it) and let the oldest past the kept turns go."""
        lock_person(conn, person_id)
        if forgotten_at(conn, person_id) >= said_at:
            return False
        conn.executemany(
            "INSERT INTO history (scope, person_id, role, content, created_at) VALUES (?, ?, ?, ?, ?)",
            [(scope, person_id, "human", turn.human, now), (scope, person_id, "ai", turn.ai, now)],
        )
        conn.execute(
            "DELETE FROM history WHERE scope = ? AND id NOT IN "
            "(SELECT id FROM history WHERE scope = ? ORDER BY id DESC LIMIT ?)",
            (scope, scope, self._kept_turns * 2),
        )
        return True

    def stored_in(self, conn: Connection, scope: str) -> list[StoredTurn]:
        """The scope's stored turns, read after a write's commit (a SQLite writer holds the lock until then;
        the fold that uses them is a compare-and-set, so a write between the two is safe)."""
        return pair_turns(read_rows(conn, scope, self._kept_turns))

    async def clear(self, scope: str) -> None:
        """/reset: forget the recent turns of one scope, its summary, and the file it last sent."""

        def delete(conn: Connection) -> None:
            with transaction(conn):
                conn.execute("DELETE FROM history WHERE scope = ?", (scope,))
                conn.execute("DELETE FROM file_context WHERE scope = ?", (scope,))
                conn.execute("DELETE FROM summaries WHERE scope = ?", (scope,))
                conn.execute("DELETE FROM summary_people WHERE scope = ?", (scope,))

        await self._db.run(delete)

    async def erase_person(self, person_id: str, asked_at: float) -> None:
        """/forget all, sent at `asked_at`: every turn of this person, in every scope, their stored messages,
        and a mark that refuses anything they said before it (still on its way) — one transaction."""

        def delete(conn: Connection) -> None:
            with transaction(conn):
                lock_person(conn, person_id)
                mark_forgotten(conn, person_id, asked_at)
                conn.execute("DELETE FROM history WHERE person_id = ?", (person_id,))
                erase_person_messages(conn, person_id)

        await self._db.run(delete)

    async def shrink(self) -> None:
        """Rebuild the database file after personal data was deleted (no recoverable copy)."""
        await self._db.shrink()

    async def purge_older_than(self, cutoff: float) -> int:
        """Delete turns said before `cutoff` (epoch seconds), every summary holding anything said before it
        (a summary is as old as the oldest turn folded into it) and the token counts of days before it;
        return how many turn rows went."""
        day = time.strftime("%Y-%m-%d", time.gmtime(cutoff))

        def delete(conn: Connection) -> int:
            with transaction(conn):
                old = "SELECT scope FROM summaries WHERE oldest_at < ?"
                conn.execute(f"DELETE FROM summary_people WHERE scope IN ({old})", (cutoff,))  # noqa: S608
                conn.execute("DELETE FROM summaries WHERE oldest_at < ?", (cutoff,))
                conn.execute("DELETE FROM token_usage WHERE day < ?", (day,))
                return int(conn.execute("DELETE FROM history WHERE created_at < ?", (cutoff,)).rowcount)

        return await self._db.run(delete)
