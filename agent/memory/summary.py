"""The rolling summary of each conversation: after a reply, the turns that left the prompt's window
(HISTORY_TURNS, HISTORY_TOKENS) — and the oldest third of the window with them, so that a long
conversation is folded every few replies rather than after each — are folded in the background into the
conversation's summary (prompts/memory.yaml `summary_*`, capped at SUMMARY_TOKENS), which the prompt
shows as a delimited block.

Kept per history scope, so it holds only what that conversation's prompt already showed: a private
conversation's summary never holds another person's words. A fold writes only when nothing moved
meanwhile — the turns it read are all still stored and the summary is the version it read — else it is
dropped and the next reply folds again: a /reset, a /forget all (which erases every summary holding the
person's words) or another fold always wins. The reply never waits for it."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import secrets
import time

from langchain_core.language_models import BaseChatModel

from agent.memory.history import HistoryStore, Row, StoredTurn, Turn, pair_turns, read_rows
from agent.model.tokens import clip_tokens, message_text
from agent.model.usage import on_behalf_of
from agent.prompts.library import PromptLibrary
from agent.storage.connection import Connection, lock_person, transaction
from agent.storage.database import Database

log = logging.getLogger(__name__)

NONE_YET = "（暂无）"


class Summaries:
    def __init__(
        self,
        database: Database,
        history: HistoryStore,
        model: BaseChatModel,
        prompts: PromptLibrary,
        *,
        tokens: int,
        timeout: float,
        bot_name: str = "助手",
    ) -> None:
        self._db = database
        self._history = history
        self._model = model
        self._prompts = prompts
        self.tokens = tokens
        self._timeout = timeout
        self._bot_name = bot_name
        self._folds: dict[str, asyncio.Task[bool]] = {}
        self._folding = asyncio.Semaphore(FOLDS_AT_ONCE)

    @property
    def on(self) -> bool:
        return self.tokens > 0 and self._history.turns > 0

    async def text(self, scope: str) -> str:
        """The conversation's summary, or "" when it has none (never a tag that would close its block)."""
        if not self.on:
            return ""

        return await self._db.run(lambda conn: _read_text(conn, scope))

    async def window_and_text(self, scope: str) -> tuple[list[Turn], str]:
        """The history window and the summary of a scope, read together (one database round trip)."""
        history = self._history
        if not self.on:
            return await history.recent(scope), ""

        def read(conn: Connection) -> tuple[list[Row], str]:
            return read_rows(conn, scope, history.turns), _read_text(conn, scope)

        rows, text = await self._db.run(read)
        return history.window(pair_turns(rows)), text

    def fold_later(self, scope: str, person_id: str, stored: list[StoredTurn] | None = None) -> None:
        """After `person_id`'s reply: fold what left the window, in the background (one fold per scope at
        a time); its tokens count as theirs (/usage). `stored`: the scope's turns as the reply's history
        write read them back (else the fold reads them)."""
        if not self.on or scope in self._folds:
            return
        if stored is not None and self._history.window_size([t.turn for t in stored]) == len(stored):
            return  # nothing past the window: no fold
        context = contextvars.copy_context()
        context.run(on_behalf_of.set, person_id)
        folding = self._fold_quietly(scope, stored)
        task = asyncio.create_task(folding, name=f"summary-{scope[:24]}", context=context)
        self._folds[scope] = task
        task.add_done_callback(lambda _: self._folds.pop(scope, None))

    async def settle(self) -> None:
        """Wait for the folds under way (shutdown, tests)."""
        while self._folds:
            await asyncio.gather(*list(self._folds.values()), return_exceptions=True)

    async def _fold_quietly(self, scope: str, stored: list[StoredTurn] | None = None) -> bool:
        try:
            return await asyncio.wait_for(self.fold(scope, stored), self._timeout)
        except Exception as exc:  # the turns stay stored (a bounded backlog): the next reply tries again
            log.warning(
                "conversation summary not updated (%s): the next reply tries again", type(exc).__name__
            )
            return False

    async def fold(self, scope: str, stored: list[StoredTurn] | None = None) -> bool:
        """Fold the turns past the window into the summary now (the oldest FOLD_MAX_TOKENS of them at
        most: a backlog is folded over several replies); True when it wrote one. `stored`: the scope's
        turns if just read (the write below is a compare-and-set: a copy read earlier is safe)."""
        if stored is None:
            stored = await self._history.stored(scope)
        window = self._history.window_size([t.turn for t in stored])
        if len(stored) <= window:
            return False
        # The oldest third of the window goes with what left it: a long conversation is folded every few
        # replies (a third of the summary model calls), not after each one.
        leaving = _first_tokens(stored[: len(stored) - window + window // FOLD_AHEAD_DIVISOR])

        def read(conn: Connection) -> tuple[str, int, float]:
            row = conn.execute(
                "SELECT text, version, oldest_at FROM summaries WHERE scope = ?", (scope,)
            ).fetchone()
            return (str(row[0]), int(row[1]), float(row[2])) if row else ("", 0, leaving[0].created_at)

        current, version, oldest_at = await self._db.run(read)
        asked = self._prompts.defaults.summary.format_messages(
            summary=current or NONE_YET, turns=self._lines(leaving), limit=self.tokens
        )
        async with self._folding:
            answered = await self._model.ainvoke(asked)
        answer = clip_tokens(_TAGS.sub("", message_text(answered)).strip(), self.tokens)
        if not answer:
            return False
        oldest_at = min(oldest_at, leaving[0].created_at)
        written = await self._db.run(lambda conn: _write(conn, scope, leaving, answer, version, oldest_at))
        log.info(
            "conversation summary: %s %d turn(s)",
            "folded" if written else "skipped (moved meanwhile)",
            len(leaving),
        )
        return written

    def _lines(self, turns: list[StoredTurn]) -> str:
        return "\n".join(f"用户：{t.turn.human}\n{self._bot_name}：{t.turn.ai}" for t in turns)


FOLD_MAX_TOKENS = 3000  # turns given to one fold: a backlog after failures never outgrows a small model
FOLD_AHEAD_DIVISOR = 3  # a fold takes 1/3 of the window along (windows of 1 or 2 turns: none)
FOLDS_AT_ONCE = 2  # folds compete with replies for the endpoint
_TAGS = re.compile(r"</?\s*conversation_summary\s*>", re.IGNORECASE)  # a summary never closes its own block


def _read_text(conn: Connection, scope: str) -> str:
    row = conn.execute("SELECT text FROM summaries WHERE scope = ?", (scope,)).fetchone()
    return _TAGS.sub("", str(row[0])) if row else ""


def _first_tokens(turns: list[StoredTurn]) -> list[StoredTurn]:
    """The oldest of `turns` within FOLD_MAX_TOKENS (at least one)."""
    kept: list[StoredTurn] = []
    spent = 0
    for turn in turns:
        spent += turn.turn.tokens
        if kept and spent > FOLD_MAX_TOKENS:
            break
        kept.append(turn)
    return kept


def _write(
    conn: Connection, scope: str, folded: list[StoredTurn], text: str, version: int, oldest_at: float
) -> bool:
    """Compare and set, in one transaction: the folded turns are deleted only if all are still there, and
    the summary replaced only if it is still the version that was read (none: none there still). Either
    miss rolls everything back: a /reset, a /forget all or another replica's fold came first."""
    ids = [row_id for turn in folded for row_id in turn.ids]
    marks = ",".join("?" * len(ids))
    people = sorted({turn.person_id for turn in folded})
    now = time.time()
    try:
        with transaction(conn, durable=False):
            for person_id in people:  # a /forget all of theirs on another replica waits, or has already run
                lock_person(conn, person_id)
            deleted = conn.execute(f"DELETE FROM history WHERE id IN ({marks})", ids).rowcount  # noqa: S608
            if deleted != len(ids):
                raise _Moved
            fresh = secrets.randbelow(2**62) + 1  # never repeats: no ABA after a delete
            if version:
                changed = conn.execute(
                    "UPDATE summaries SET text = ?, version = ?, oldest_at = ?, updated_at = ? "
                    "WHERE scope = ? AND version = ?",
                    (text, fresh, oldest_at, now, scope, version),
                ).rowcount
            else:
                changed = conn.execute(
                    "INSERT INTO summaries (scope, text, version, oldest_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope) DO NOTHING",
                    (scope, text, fresh, oldest_at, now),
                ).rowcount
            if changed != 1:
                raise _Moved
            conn.executemany(
                "INSERT INTO summary_people (scope, person_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(scope, person_id) for person_id in people],
            )
    except _Moved:
        return False
    return True


class _Moved(Exception):
    """Something changed the conversation while the summary was written: roll back."""
