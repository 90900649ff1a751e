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
        self._in_transaction = False  # what `write` found, until `then` says it was committed
        self._written = False
        self._refused = False  # the person asked to be forgotten after saying it
        self._stored: list[StoredTurn] | None = None  # the scope's turns read back (None: the fold reads)

    def write(self, conn: Connection) -> None:
        """Inside the caller's transaction, on the database's thread (it reads no `rowcount`: the
        transaction may be pipelined)."""
        message = self.message
        now = time.time()
        self._in_transaction = self._history.keep_in(
            conn, self.scope, self.turn, message.person_id, message.arrived_at, now
        )

    def then(self, conn: Connection) -> None:
        """After that transaction's commit, on the same connection: the turn is written. Never raises (the
        reply is marked sent already): turns that cannot be read back are read by the fold itself."""
        self._written, self._refused = True, not self._in_transaction
        if self._in_transaction and self._folding:
            try:
                self._stored = self._history.stored_in(conn, self.scope)
            except Exception:  # the fold reads them itself
                self._stored = None

    async def finish(self) -> None:
        """On the event loop, once the reply is sent (or stored to be sent): the turn written now unless
        the sent mark carried it, then the fold and the learning started."""
        message = self.message
        if not self._written:
            kept = await self._history.keep(
                self.scope, self.turn, message.person_id, message.arrived_at, read_back=self._folding
            )
            self._refused = kept is None
            self._stored = kept if self._folding else None
        if not self._refused and self._summaries is not None:
            self._summaries.fold_later(self.scope, message.person_id, self._stored)
        if self._memory is not None:  # the history write checked "/forget all" when it kept the turn
            self._memory.learn_later(message, not_forgotten=not self._refused)
