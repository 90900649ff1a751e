"""Long-term memory over mem0: per person, scoped by where a fact was learned, never in a reply's way.

- A person is `IncomingMessage.person_id` (corp + staff id, else sender id) = mem0's `user_id`.
- Every memory records where it was learned: `chat` ("direct" or "group") and `conversation_id`.
- One-to-one chats recall all of the person's memories; a group recalls the speaker's memories learned
  in that group, plus their one-to-one memories only after `/memory share on`. Never another person's.
- Facts are extracted by our own chain (prompts/memory.yaml, the conversation's chat model, or the
  deterministic mock extractor), pass the guard in code (agent/memory/guard.py), and only then are
  stored with mem0 (`infer=False`: mem0 embeds and stores, it makes no LLM call). So the memory thread
  never waits on a model, and a poisoned extraction cannot reach the store.
- mem0 is imported lazily, after MEM0_TELEMETRY/MEM0_DIR are set (architecture.md invariant 7). All mem0 calls
  run on one dedicated thread: the embedded Qdrant folder has exactly one client (invariant 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from agent.errors import ConfigError, DingbotError
from agent.memory.extraction import Extractor
from agent.memory.failures import explain_open_failure, recall_problem
from agent.memory.store import Mem0Store
from agent.messages import ContentKind, IncomingMessage
from agent.model.usage import on_behalf_of
from agent.observe import NoObserver, Observer
from agent.prompts.library import PromptLibrary
from agent.settings.config import Settings
from agent.storage.batches import GroupWriter
from agent.storage.connection import Connection
from agent.storage.database import Database, Listener
from agent.storage.health import StorageError
from agent.storage.records import finish_learning, forgotten_at, pending_learning

log = logging.getLogger(__name__)
T = TypeVar("T")

NEVER = float("-inf")  # no "/forget all" yet
CHANGES_CHANNEL = "dingbot_memory"  # replicas tell each other whose memories changed (PostgreSQL NOTIFY)
SERVER_CHECK_SECONDS = 2.0  # a vector server's heartbeat: /readyz waits at most this long
RECALL_PAUSE_SECONDS = 30  # after a failed or slow recall, replies skip memory for this long
FINISHED_JOBS_SECONDS = 1.0  # done learning jobs are deleted together, this often
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_TAGS = re.compile(r"</?\s*memories\s*>", re.IGNORECASE)


class MemoryUnavailable(DingbotError):
    """Long-term memory is off (the store could not be opened)."""


class MemoryService:
    def __init__(
        self,
        settings: Settings,
        *,
        prompts: PromptLibrary,
        extraction_model: BaseChatModel,
        embeddings: Embeddings,
        database: Database,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.prompts = prompts
        self._extraction_model = extraction_model
        self._embeddings = embeddings
        self._database = database
        self._executor: ThreadPoolExecutor | None = None
        self._store: Mem0Store | None = None
        self._recall_executor: ThreadPoolExecutor | None = None
        self._recall_paused_until = 0.0
        self._forgotten_at: dict[str, float] = {}
        self._writes: set[asyncio.Task[None]] = set()
        # Done learning jobs leave the table together (one delete a second, not one per message): after a
        # crash the jobs of that second are learned once more, which stores nothing new.
        self._finished: GroupWriter[str] = GroupWriter(database, finish_learning, FINISHED_JOBS_SECONDS)
        self.observer: Observer = observer or NoObserver()
        self._extractor = Extractor(extraction_model, self.observer)
        self.off_reason = ""  # why the store did not open, for /healthz
        self._listener: Listener | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._store is not None

    @property
    def pending_writes(self) -> int:
        return len(self._writes)

    @property
    def embedding_dims(self) -> int | None:
        """The vector size of the open store (= the embedder's), or None while memory is off."""
        return self._store.dims if self._store is not None else None

    async def open(self) -> None:
        """Open the store. A dimension mismatch stops startup (ConfigError); anything else leaves the
        service running without long-term memory, with one warning naming the cause and the fix."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dingbot-memory")
        self._recall_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dingbot-memory-recall")
        self._recall_paused_until = 0.0
        try:
            self._store = await self._on_thread(
                lambda: Mem0Store.open(
                    self.settings, extraction_model=self._extraction_model, embeddings=self._embeddings
                )
            )
        except ConfigError:
            raise
        except Exception as exc:
            problem = explain_open_failure(exc, self.settings)
            self.off_reason = problem.cause
            log.warning("long-term memory is OFF: %s. Fix: %s", problem.cause, problem.fix)
            self.observer.report(problem)
            return
        store = self._store
        await self._on_thread(lambda: self._hear_other_replicas(store))

    def _hear_other_replicas(self, store: Mem0Store) -> None:
        """Replicas on one database and one Chroma server: each keeps a per-person cache, trusted only
        while it hears of every other replica's writes (a LISTEN connection); while not connected, recalls
        search the server."""
        if not self.settings.chroma_url:
            return
        if self._database.single_owner:  # nobody else writes: the cache is filled once, like the embedded one
            store.preload()
            return
        store.cache_trusted = False

        def connected() -> None:
            store.invalidate(None)  # whatever happened while nobody listened
            store.preload()  # meanwhile recalls search the server; notices wait on this thread
            store.cache_trusted = True

        def lost() -> None:
            store.cache_trusted = False
            store.invalidate(None)

        self._listener = self._database.listen(CHANGES_CHANNEL, store.invalidate, connected, lost)

    async def server_answers(self) -> bool:
        """With memory on a vector server (CHROMA_URL, QDRANT_URL): does it answer now? (a heartbeat of at
        most SERVER_CHECK_SECONDS). Always True for the embedded store."""
        url = self.settings.vector_server
        if url is None:
            return True
        path = "/api/v2/heartbeat" if self.settings.chroma_url else "/readyz"
        try:
            async with httpx.AsyncClient(timeout=SERVER_CHECK_SECONDS) as client:
                return (await client.get(url.rstrip("/") + path)).status_code == 200
        except httpx.HTTPError:
            return False

    async def reopen(self) -> bool:
        """Memory is off and lives on a vector server that may be back: open it again (the periodic check
        calls this). True when memory is on."""
        if self._store is not None or self.settings.vector_server is None:
            return self._store is not None
        if not await self.server_answers():
            return False
        await self.close()
        await self.open()
        if self._store is not None:
            self.off_reason = ""
            log.warning("long-term memory is ON again: the vector server answers")
        return self._store is not None

    async def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await asyncio.to_thread(listener.stop)
        if self._executor is None:
            return
        await self.settle()
        if self._store is not None:
            store, self._store = self._store, None
            await self._on_thread(store.close)
        self._executor.shutdown(wait=True)
        self._executor = None
        if self._recall_executor is not None:  # a hung recall must not hold shutdown
            self._recall_executor.shutdown(wait=False, cancel_futures=True)
            self._recall_executor = None

    async def _on_thread(self, work: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("memory service is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    # --- sharing -----------------------------------------------------------------------------

    async def is_shared(self, person_id: str) -> bool:
        def read(conn: Connection) -> bool:
            row = conn.execute(
                "SELECT shared FROM memory_sharing WHERE person_id = ?", (person_id,)
            ).fetchone()
            return bool(row and row[0])

        return await self._database.run(read)

    async def set_shared(self, person_id: str, shared: bool) -> None:
        def write(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO memory_sharing (person_id, shared) VALUES (?, ?) "
                "ON CONFLICT (person_id) DO UPDATE SET shared = excluded.shared",
                (person_id, int(shared)),
            )

        await self._database.run(write)

    # --- recall ------------------------------------------------------------------------------

    async def _scopes(self, message: IncomingMessage) -> list[dict[str, Any]]:
        """mem0 filters for what may be recalled here (see the module docstring)."""
        person = {"user_id": message.person_id}
        if not message.is_group:
            return [person]
        scopes = [{**person, "conversation_id": message.conversation_id}]
        if await self.is_shared(message.person_id):
            scopes.append({**person, "chat": "direct"})
        return scopes

    async def recall(self, message: IncomingMessage) -> list[str]:
        """The person's memories relevant to this message, capped by MEMORY_TOP_K and MEMORY_MAX_CHARS.

        Never raises: a failing or slow store answers [] and logs one warning.
        """
        if self.settings.memory_top_k == 0 or not _has_words(message) or self._store is None:
            return []
        started = time.perf_counter()
        if time.monotonic() < self._recall_paused_until:
            return []
        try:
            store = self._open_store_or_raise()
            scopes = await self._scopes(message)
            top_k = self.settings.memory_top_k
            # Its own thread: a recall never queues behind writes or a /forget on the memory thread.
            if self._recall_executor is None:
                raise MemoryUnavailable
            found = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(
                    self._recall_executor, lambda: store.search(message.text, scopes, top_k)
                ),
                self.settings.memory_timeout,
            )
        except Exception as exc:
            self._recall_paused_until = time.monotonic() + RECALL_PAUSE_SECONDS
            cause = (
                f"timed out after {self.settings.memory_timeout:g} s"
                if isinstance(exc, TimeoutError)
                else (f"failed ({type(exc).__name__})")
            )
            log.warning(
                "memory search %s: answering without memories; recalls pause for %d s",
                cause,
                RECALL_PAUSE_SECONDS,
            )
            self.observer.report(recall_problem(exc, self.settings.memory_timeout))
            return []
        memories: list[str] = []
        budget = self.settings.memory_max_chars
        for _, text in found[: self.settings.memory_top_k]:
            text = _TAGS.sub("", " ".join(text.split()))  # a memory can never close the data block
            if not text or len(text) > budget:
                continue  # a shorter one further down may still fit
            memories.append(text)
            budget -= len(text)
        log.info("memory: recalled %d in %.0f ms", len(memories), (time.perf_counter() - started) * 1000)
        return memories

    # --- learn -------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait for background writes to finish (each is bounded by MEMORY_TIMEOUT)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        await self._finished.flush()

    def _visible(self, store: Mem0Store, message: IncomingMessage, shared: bool) -> list[tuple[str, str]]:
        """(id, text) of the person's memories that may be shown here, oldest first."""
        visible = []
        for item in store.all_of(message.person_id):
            where = item.get("metadata") or {}
            here = where.get("conversation_id") == message.conversation_id
            if message.is_group and not (here or (shared and where.get("chat") == "direct")):
                continue
            visible.append((str(item["id"]), str(item.get("memory", ""))))
        return visible

    def _open_store_or_raise(self) -> Mem0Store:
        if self._store is None:
            raise MemoryUnavailable
        return self._store

    async def list_memories(self, message: IncomingMessage) -> list[tuple[str, str]]:
        """/memory: what the bot remembers about the speaker that may be shown in this conversation."""
        store = self._open_store_or_raise()
        shared = message.is_group and await self.is_shared(message.person_id)
        return await self._on_thread(lambda: self._visible(store, message, shared))

    async def memories_of(self, person_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(id, text, where it was learned) of every memory of a person, oldest first (the console)."""
        store = self._open_store_or_raise()
        items = await self._on_thread(lambda: store.all_of(person_id))
        return [
            (str(item.get("id", "")), str(item.get("memory", "")), dict(item.get("metadata") or {}))
            for item in items
        ]

    async def erase_memory(self, person_id: str, memory_id: str) -> bool:
        """Erase one memory of a person the way /forget N does (no copy left); False when it is not theirs
        or is gone already (the console)."""
        store = self._open_store_or_raise()
        erased = await self._on_thread(lambda: store.erase_own([memory_id], person_id))
        if erased:
            await self._changed(person_id)
        return bool(erased)

    async def people_like(self, fragment: str) -> list[str]:
        """Ids of people with memories whose id contains `fragment` (the console's search)."""
        store = self._open_store_or_raise()
        return await self._on_thread(lambda: store.people_like(fragment))

    async def forget(self, message: IncomingMessage, number: int) -> str | None:
        """/forget N: forget the N-th memory of `list_memories`; its text, or None when there is no such N."""
        store = self._open_store_or_raise()
        visible = await self.list_memories(message)
        if not 1 <= number <= len(visible):
            return None
        memory_id, text = visible[number - 1]
        await self._on_thread(lambda: store.erase([memory_id], message.person_id))
        await self._changed(message.person_id)
        return text

    async def forget_person(self, person_id: str, asked_at: float) -> int:
        """/forget all, sent at `asked_at`: every memory of the person, mem0's copies included; returns
        how many. A write still under way of something they said before it is refused when it reaches the
        store (on the same thread as this erase), so a forgotten fact cannot come back a second later."""
        store = self._open_store_or_raise()
        self._forgotten_at[person_id] = max(asked_at, self._forgotten_at.get(person_id, NEVER))

        def erase_all() -> int:
            erased = 0
            while ids := [str(item["id"]) for item in store.all_of(person_id)]:
                store.erase(ids, person_id)
                erased += len(ids)
            return erased

        erased = await self._on_thread(erase_all)
        await self._changed(person_id)
        return erased

    def learn_later(self, message: IncomingMessage, *, not_forgotten: bool = False) -> None:
        """Learn from `message` in the background: the caller (a reply just sent) never waits. Its job
        row (stored with the reply) is removed once done, whatever the outcome. `not_forgotten`: the
        caller's own write just found no "/forget all" of the person after the message (the history write
        checks in its transaction), so the database is not asked again."""
        learning = self._learn_job(message, not_forgotten)
        task = asyncio.create_task(learning, name=f"memory-{message.message_id}")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _learn_job(self, message: IncomingMessage, not_forgotten: bool) -> None:
        on_behalf_of.set(message.person_id)  # this task's own context: the extraction's tokens are theirs
        try:
            await self.learn(message, not_forgotten=not_forgotten)
        except StorageError:
            return  # the database's health logs it; the job stays stored and is resumed at the next start
        self._finished.add(message.message_id)

    async def resume_learning(self) -> int:
        """At startup: the messages answered before a crash whose facts were never learned."""
        if self._store is None:
            return 0
        pending = await self._database.run(pending_learning)
        for message in pending:
            self.learn_later(message)
        if pending:
            log.info("memory: resuming %d unfinished learning job(s)", len(pending))
        return len(pending)

    async def learn(self, message: IncomingMessage, *, not_forgotten: bool = False) -> int:
        """Extract facts from what the person said, guard them, store the rest. Returns how many were stored.
        `not_forgotten`: the database was just asked whether they asked to be forgotten since (no).

        Never raises: failures and timeouts (MEMORY_TIMEOUT) log one warning and store nothing.
        """
        if not _has_words(message) or self._store is None:
            return 0
        said_at = message.arrived_at
        known = NEVER
        if not not_forgotten:
            known = await self._database.run(lambda conn: forgotten_at(conn, message.person_id))
        if max(known, self._forgotten_at.get(message.person_id, NEVER)) >= said_at:
            return 0  # they asked to be forgotten after saying it
        try:
            return await asyncio.wait_for(self._learn(message), self.settings.memory_timeout)
        except TimeoutError:
            log.warning(
                "memory write timed out after %g s: facts not stored by then are dropped",
                self.settings.memory_timeout,
            )
        except Exception as exc:
            log.warning("memory write failed (%s): nothing stored", type(exc).__name__)
        return 0

    async def _learn(self, message: IncomingMessage) -> int:
        said_at = message.arrived_at
        store = self._open_store_or_raise()
        # What is already known *here* (the scopes a recall here may use): a group's extraction never sees
        # the person's private facts unless they shared them (/memory share on), so it cannot restate one
        # into the group, nor replace one; a shared one it may update (the new fact is the group's).
        scopes = await self._scopes(message)
        known = await self._on_thread(lambda: _known(store, message.text, scopes))
        facts = await self._extractor.facts(self.prompts.defaults, message, [text for _, text in known])
        if not facts:
            return 0
        where = {
            "chat": "group" if message.is_group else "direct",
            "conversation_id": message.conversation_id,
        }

        def add_all() -> tuple[list[str], list[str]]:
            if self._forgotten_at.get(message.person_id, NEVER) >= said_at:
                return [], []  # "/forget all", sent after this, came while it was being extracted
            added: list[str] = []
            replaced: list[str] = []
            for fact in facts:
                if not store.knows(
                    message.person_id, fact.text, where
                ):  # a concurrent write may have added it
                    added += store.add(fact.text, message.person_id, where)
                stale = [known[n - 1][0] for n in fact.replaces]  # stored first: an update never loses both
                replaced += store.erase_own(stale, message.person_id) if stale else []
            return added, replaced

        added, replaced = await self._on_thread(add_all)
        if added or replaced:
            await self._changed(message.person_id)
            # A "/forget all" handled by another replica while these were written: undo them (that replica's
            # erase may have run before they landed). Checked after the write, so none can slip between.
            if (
                added
                and await self._database.run(lambda conn: forgotten_at(conn, message.person_id)) >= said_at
            ):
                await self._on_thread(lambda: store.erase(added, message.person_id))
                await self._changed(message.person_id)
                return 0
        log.info("memory: stored %d fact(s), replaced %d", len(added), len(replaced))
        return len(added)

    async def _changed(self, person_id: str) -> None:
        """Tell the other replicas (their per-person caches) that this person's memories changed."""
        with contextlib.suppress(StorageError):  # the database's health logs it (a window: docs/replicas.md)
            await self._database.notify(CHANGES_CHANNEL, person_id)


KNOWN_RECENT = 12  # the extraction prompt lists the person's most recent facts here...
KNOWN_RELATED = 8  # ...and those closest to the message (an old "用户住在北京" when they say they moved)


def _known(store: Mem0Store, text: str, scopes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(id, text) of what the extraction prompt lists as already known, numbered in this order."""
    known = dict(store.recent(scopes, KNOWN_RECENT))
    for _, memory_id, fact in store.search_ids(text, scopes, KNOWN_RELATED):
        known.setdefault(memory_id, fact)
    return list(known.items())


def _has_words(message: IncomingMessage) -> bool:
    """What the person wrote (a picture's or a file's own content is never learned from: only their words
    about it, and never a document's text — agent/media)."""
    return message.kind in (ContentKind.TEXT, ContentKind.MEDIA) and bool(message.text.strip())
