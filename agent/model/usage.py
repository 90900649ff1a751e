"""Tokens used, per person, day and model: every model call made for a person's message (the answer, its
tool rounds, the fact extraction, the conversation summary) is counted — the endpoint's own `usage` where
it sends one (streamed answers ask for it), else cl100k_base's count — for `/usage` (table `token_usage`)
and the `dingbot_llm_tokens` metric.

Whose call it is travels in a context variable (`on_behalf_of`), set where the work for a message starts;
a callback on each model reads it when the call ends. Calls made for nobody (the startup check) are
counted in the metric only."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from agent.model.tokens import count_messages, count_tokens
from agent.observe import NoObserver, Observer
from agent.storage.batches import GroupWriter
from agent.storage.connection import Connection, transaction
from agent.storage.database import Database

log = logging.getLogger(__name__)

MAX_RUNS = 256  # calls under way at once that the callback remembers (their prompt, counted if no usage)
on_behalf_of: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dingbot_usage_person", default=None
)


@dataclass(frozen=True)
class Usage:
    prompt: int = 0
    completion: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion


# Not for a person who asked to be forgotten (/forget all erased their rows) after the count was taken.
_ADD_SQL = (
    "INSERT INTO token_usage (person_id, day, model, prompt_tokens, completion_tokens) "
    "SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM forgotten WHERE person_id = ? AND at >= ?) "
    "ON CONFLICT (person_id, day, model) DO UPDATE SET "
    "prompt_tokens = token_usage.prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = token_usage.completion_tokens + excluded.completion_tokens"
)


FLUSH_SECONDS = 1.0  # counts gather this long before they are written (a read of them writes them at once)
_Count = tuple[str, str, str, int, int, float]  # person, day, model, prompt, completion, counted at


def _add_counts(conn: Connection, counts: list[_Count]) -> None:
    """One row per person, day and model (the batch's counts summed), in one transaction."""
    summed: dict[tuple[str, str, str], list[float]] = {}
    for person, day, model, prompt, completion, at in counts:
        row = summed.setdefault((person, day, model), [0, 0, at])
        row[0] += prompt
        row[1] += completion
    rows = [
        (person, day, model, int(p), int(c), person, at)
        for (person, day, model), (p, c, at) in summed.items()
    ]
    with transaction(conn, durable=False):  # a count, not a promise
        conn.executemany(_ADD_SQL, rows)


class UsageBook:
    """Counts reach the table in batches (`GroupWriter`): what is recorded within FLUSH_SECONDS of the
    first count waiting is written together (one row per person, day and model, one transaction), so a
    busy service pays one write a second, not one per model call. Reading the counts (`of`, `settle`,
    shutdown) writes what waits first; a crash of the server loses at most that second of counts."""

    def __init__(self, database: Database, timezone: tzinfo, observer: Observer | None = None) -> None:
        self._db = database
        self._timezone = timezone
        self.observer: Observer = observer or NoObserver()
        self._counts: GroupWriter[_Count] = GroupWriter(database, _add_counts, FLUSH_SECONDS)

    def record(self, person_id: str | None, model: str, prompt: int, completion: int) -> None:
        """Count one call (on the event loop): the metric now, the person's row in the background."""
        self.observer.tokens_used(model, prompt, completion)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a synchronous call outside the service's loop: the metric is enough
            return
        if person_id is None:
            return
        day = datetime.now(self._timezone).strftime("%Y-%m-%d")
        self._counts.add((person_id, day, model, prompt, completion, time.time()))

    async def settle(self) -> None:
        """Write the counts recorded so far, now, and wait for that."""
        await self._counts.flush()

    async def of(self, person_id: str, now: datetime | None = None) -> tuple[Usage, Usage]:
        """(today, this month) of the person, in BOT_TIMEZONE's days."""
        await self.settle()
        now = (now or datetime.now(self._timezone)).astimezone(self._timezone)
        today, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m-")

        def read(conn: Connection) -> tuple[Usage, Usage]:
            rows = conn.execute(
                "SELECT day, SUM(prompt_tokens), SUM(completion_tokens) FROM token_usage "
                "WHERE person_id = ? AND day >= ? AND day <= ? GROUP BY day",
                (person_id, month + "01", month + "31"),
            ).fetchall()
            day = [Usage(int(r[1]), int(r[2])) for r in rows if r[0] == today]
            whole = Usage(sum(int(r[1]) for r in rows), sum(int(r[2]) for r in rows))
            return (day[0] if day else Usage()), whole

        return await self._db.run(read)


class UsageCallback(BaseCallbackHandler):
    """Counts each chat model call as it ends, for the person of the context it ran in."""

    run_inline = True  # on the event loop, in the caller's context (the person)

    def __init__(self, book: UsageBook) -> None:
        self.book = book
        self._started: dict[UUID, tuple[str, list[BaseMessage]]] = {}

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        params = kwargs.get("invocation_params") or {}
        metadata = kwargs.get("metadata") or {}
        model = (
            metadata.get("ls_model_name")
            or params.get("model")
            or params.get("model_name")
            or params.get("_type")
        )
        while len(self._started) >= MAX_RUNS:  # a call cancelled mid-way never ends: the oldest go
            self._started.pop(next(iter(self._started)))
        self._started[run_id] = (str(model or "unknown"), messages[0] if messages else [])

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        model, prompt_messages = self._started.pop(run_id, ("unknown", []))
        prompt = completion = 0
        counted = False
        for generation in (g for batch in response.generations for g in batch):
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage:
                prompt += int(usage.get("input_tokens") or 0)
                completion += int(usage.get("output_tokens") or 0)
                counted = True
            else:
                completion += count_tokens(generation.text)
        if not counted:  # the endpoint sent no usage: counted here (only then: it costs CPU)
            prompt = count_messages(prompt_messages)
        self.book.record(on_behalf_of.get(), model, prompt, completion)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._started.pop(run_id, None)


def count_usage_of(model: Any, callback: UsageCallback) -> None:
    """Add the callback to a chat model's own (keeping any it has: a test's recorder)."""
    callbacks = getattr(model, "callbacks", None)
    if isinstance(callbacks, list):
        if callback not in callbacks:
            callbacks.append(callback)
    elif callbacks is None:
        model.callbacks = [callback]
