"""What a sent reply leaves behind: its turn in the history, then the summary fold and the learning."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agent.memory.history import HistoryStore, StoredTurn, Turn
from agent.messages import IncomingMessage
from agent.storage.connection import Connection

if TYPE_CHECKING:
    from agent.memory.service import MemoryService
    from agent.memory.summary import Summaries


class Remembering:
    """One reply's turn to keep. The turn can ride in the transaction that marks the reply sent (`write`,
    then `then` after that commit, both on the database's thread: one round trip for both, and the turn
    is kept exactly when the reply is marked sent); `finish` writes it alone if nothing carried it, then
    starts the summary fold and the learning in the background."""

    def __init__(
        self,
        message: IncomingMessage,
        turn: Turn,
        scope: str,
        history: HistoryStore,
        summaries: Summaries | None,
        memory: MemoryService | None,
    ) -> None:
        self.message = message
        self.turn = turn
        self.scope = scope
        self._history = history
        self._summaries = summaries
        self._memory = memory
        self._folding = summaries is not None and summaries.on  # the fold reads the turns kept here
        self._written = False
        self._kept: list[StoredTurn] | None = None  # None: refused (forgotten); else the turns read back

    def write(self, conn: Connection) -> None:
        """Inside the caller's transaction, on the database's thread (it reads no `rowcount`: the
        transaction may be pipelined)."""
        message = self.message
        kept = self._history.keep_in(
            conn, self.scope, self.turn, message.person_id, message.arrived_at, time.time()
        )
        self._kept = [] if kept else None
        self._written = True

    def then(self, conn: Connection) -> None:
        """After that transaction's commit, on the same connection."""
        if self._kept is not None and self._folding:
            self._kept = self._history.stored_in(conn, self.scope)

    async def finish(self) -> None:
        """On the event loop, once the reply is sent (or stored to be sent)."""
        message = self.message
        if not self._written:
            self._kept = await self._history.keep(
                self.scope, self.turn, message.person_id, message.arrived_at, read_back=self._folding
            )
        if self._kept is not None and self._summaries is not None:
            self._summaries.fold_later(self.scope, message.person_id, self._kept)
        if self._memory is not None:  # the history write checked "/forget all" when it kept the turn
            self._memory.learn_later(message, not_forgotten=self._kept is not None)
