"""Long-term memory over mem0: per person, scoped by where a fact was learned, never in a reply's way.

- A person is `IncomingMessage.person_id` (corp + staff id, else sender id) = mem0's `user_id`.
- Every memory records where it was learned: `chat` ("direct" or "group") and `conversation_id`.
- One-to-one chats recall all of the person's memories; a group recalls the speaker's memories learned
  in that group, plus their one-to-one memories only after `/memory share on`. Never another person's.
- Facts are extracted by our own chain (prompts/memory.yaml, the conversation's chat model, or the
  deterministic mock extractor), pass the guard in code (agent/memory_guard.py), and only then are
  stored with mem0 (`infer=False`: mem0 embeds and stores, it makes no LLM call). So the memory thread
  never waits on a model, and a poisoned extraction cannot reach the store.
- mem0 is imported lazily, after MEM0_TELEMETRY/MEM0_DIR are set (design.md invariant 7). All mem0 calls
  run on one dedicated thread: the embedded Qdrant folder has exactly one client (invariant 6).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser

from agent.config import Settings
from agent.database import Database
from agent.errors import ConfigError, DingbotError
from agent.memory_guard import unsafe_reason
from agent.messages import ContentKind, IncomingMessage
from agent.prompts import PromptSet

log = logging.getLogger(__name__)
T = TypeVar("T")

COLLECTION = "dingbot_memories"
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_TAGS = re.compile(r"</?\s*memories\s*>", re.IGNORECASE)


def parse_facts(answer: str) -> list[str]:
    """The facts in an extraction answer: {"facts": [...]} (mem0's {"memory": [{"text"}]} accepted too)."""
    match = _JSON_OBJECT.search(answer)
    if not match:
        return []
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    items = data.get("facts", data.get("memory", []))
    facts = []
    for item in items if isinstance(items, list) else []:
        text = item.get("text") if isinstance(item, dict) else item
        if isinstance(text, str) and text.strip():
            facts.append(" ".join(text.split())[:500])
    return facts


class MemoryUnavailable(DingbotError):
    """Long-term memory is off (the store could not be opened)."""


class MemoryService:
    def __init__(
        self,
        settings: Settings,
        *,
        prompts: PromptSet,
        extraction_model: BaseChatModel,
        embeddings: Embeddings,
        database: Database,
    ) -> None:
        self.settings = settings
        self.prompts = prompts
        self._extraction_model = extraction_model
        self._embeddings = embeddings
        self._database = database
        self._executor: ThreadPoolExecutor | None = None
        self._mem0: Any = None
        self._config: dict[str, Any] = {}
        self._writes: set[asyncio.Task[int]] = set()
        self.dims: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._mem0 is not None

    async def open(self) -> None:
        """Open the store. A dimension mismatch stops startup (ConfigError); anything else leaves the
        service running without long-term memory, with one warning naming the cause and the fix."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dingbot-memory")
        try:
            await self._on_thread(self._open_store)
        except ConfigError:
            raise
        except Exception as exc:
            log.warning(
                "long-term memory is OFF: %s (%s). Fix: check EMBEDDING_MODEL at OPENAI_API_BASE, or set "
                "EMBEDDING_PROVIDER=local for endpoints without embeddings (many Ollama/vLLM setups)",
                type(exc).__name__,
                str(exc)[:200].replace(self.settings.openai_api_key.get_secret_value(), "***")
                if self.settings.openai_api_key
                else str(exc)[:200],
            )

    def _open_store(self) -> None:
        settings = self.settings
        folder = settings.memory_folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["MEM0_TELEMETRY"] = "False"  # before the first import: no calls home, no ~/.mem0 store
        os.environ.setdefault("MEM0_DIR", str(folder / "mem0"))
        logging.getLogger("mem0").setLevel(logging.ERROR)  # it logs memory text at INFO
        from mem0 import Memory

        probed = len(self._embeddings.embed_query("维度探测 dimension probe"))  # also warms the embedder
        if settings.embedding_dims is not None and settings.embedding_dims != probed:
            raise ConfigError(
                f"EMBEDDING_DIMS={settings.embedding_dims} but the embedder returns {probed}-dim vectors: "
                "unset EMBEDDING_DIMS or correct it"
            )
        store: dict[str, Any] = {
            "collection_name": COLLECTION,
            "embedding_model_dims": probed,
            "on_disk": True,
        }
        if settings.qdrant_url:
            store["url"] = settings.qdrant_url
        else:
            store["path"] = str(folder / "qdrant")
        config = {
            "llm": {"provider": "langchain", "config": {"model": self._extraction_model}},
            "embedder": {
                "provider": "langchain",
                "config": {"model": self._embeddings, "embedding_dims": probed},
            },
            "vector_store": {"provider": "qdrant", "config": store},
            "history_db_path": str(folder / "mem0_history.db"),
        }
        self._config = config
        memory = Memory.from_config(config)
        memory.db.connection.execute("PRAGMA secure_delete=ON")  # mem0's history DB: deleted text is zeroed
        stored = memory.vector_store.client.get_collection(COLLECTION).config.params.vectors.size
        if stored != probed:
            memory.vector_store.client.close()
            memory.close()
            raise ConfigError(
                f"the stored memories in {folder} have {stored}-dim vectors but the embedder gives {probed}: "
                "set EMBEDDING_PROVIDER/EMBEDDING_MODEL back to what wrote them, or move that folder away"
            )
        self._mem0 = memory
        self.dims = probed

    async def close(self) -> None:
        if self._executor is None:
            return
        await self.settle()
        if self._mem0 is not None:
            memory, self._mem0 = self._mem0, None

            def close_store() -> None:
                memory.vector_store.client.close()
                memory.close()

            await self._on_thread(close_store)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _on_thread(self, work: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("memory service is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    # --- sharing -----------------------------------------------------------------------------

    async def is_shared(self, person_id: str) -> bool:
        def read(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT shared FROM memory_sharing WHERE person_id = ?", (person_id,)
            ).fetchone()
            return bool(row and row[0])

        return await self._database.run(read)

    async def set_shared(self, person_id: str, shared: bool) -> None:
        def write(conn: sqlite3.Connection) -> None:
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

    def _search(self, query: str, scopes: list[dict[str, Any]]) -> list[tuple[float, str]]:
        found: dict[str, tuple[float, str]] = {}
        for filters in scopes:
            result = self._mem0.search(
                query, filters=filters, top_k=self.settings.memory_top_k, threshold=0.0
            )
            for item in result.get("results", []):
                score = float(item.get("score") or 0.0)
                if item["id"] not in found or found[item["id"]][0] < score:
                    found[item["id"]] = (score, str(item.get("memory", "")))
        return sorted(found.values(), reverse=True)

    async def recall(self, message: IncomingMessage) -> list[str]:
        """The person's memories relevant to this message, capped by MEMORY_TOP_K and MEMORY_MAX_CHARS.

        Never raises: a failing or slow store answers [] and logs one warning.
        """
        if self.settings.memory_top_k == 0 or message.kind is not ContentKind.TEXT or self._mem0 is None:
            return []
        started = time.perf_counter()
        try:
            scopes = await self._scopes(message)
            found = await asyncio.wait_for(
                self._on_thread(lambda: self._search(message.text, scopes)), self.settings.memory_timeout
            )
        except TimeoutError:
            log.warning(
                "memory search timed out after %g s: answering without memories", self.settings.memory_timeout
            )
            return []
        except Exception as exc:
            log.warning("memory search failed (%s): answering without memories", type(exc).__name__)
            return []
        memories: list[str] = []
        budget = self.settings.memory_max_chars
        for _, text in found[: self.settings.memory_top_k]:
            text = _TAGS.sub("", " ".join(text.split()))  # a memory can never close the data block
            if not text or len(text) > budget:
                break
            memories.append(text)
            budget -= len(text)
        log.info("memory: recalled %d in %.0f ms", len(memories), (time.perf_counter() - started) * 1000)
        return memories

    # --- learn -------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait for background writes to finish (each is bounded by MEMORY_TIMEOUT)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    def _visible(self, message: IncomingMessage, shared: bool) -> list[tuple[str, str]]:
        """(id, text) of the person's memories that may be shown here, oldest first."""
        items = self._mem0.get_all(filters={"user_id": message.person_id}, top_k=10_000).get("results", [])
        items.sort(key=lambda item: str(item.get("created_at") or ""))
        visible = []
        for item in items:
            where = item.get("metadata") or {}
            if message.is_group and not (
                where.get("conversation_id") == message.conversation_id
                or (shared and where.get("chat") == "direct")
            ):
                continue
            visible.append((str(item["id"]), str(item.get("memory", ""))))
        return visible

    async def list_memories(self, message: IncomingMessage) -> list[tuple[str, str]]:
        """/memory: what the bot remembers about the speaker that may be shown in this conversation."""
        if self._mem0 is None:
            raise MemoryUnavailable
        shared = message.is_group and await self.is_shared(message.person_id)
        return await self._on_thread(lambda: self._visible(message, shared))

    async def forget(self, message: IncomingMessage, number: int) -> str | None:
        """/forget N: forget the N-th memory of `list_memories`; its text, or None when there is no such N."""
        visible = await self.list_memories(message)
        if not 1 <= number <= len(visible):
            return None
        memory_id, text = visible[number - 1]
        await self._on_thread(lambda: self._erase([memory_id], message.person_id))
        return text

    async def forget_person(self, person_id: str) -> int:
        """/forget all: every memory of the person, mem0's copies included; returns how many."""
        if self._mem0 is None:
            raise MemoryUnavailable

        def erase_all() -> int:
            items = self._mem0.get_all(filters={"user_id": person_id}, top_k=10_000).get("results", [])
            ids = [str(item["id"]) for item in items]
            self._erase(ids, person_id)
            return len(ids)

        return await self._on_thread(erase_all)

    def _erase(self, memory_ids: list[str], person_id: str) -> None:
        """Delete memories so that no copy survives in the files: vectors, mem0's history rows (which
        keep the deleted text), raw messages; then rebuild the SQLite files they lived in."""
        for memory_id in memory_ids:
            self._mem0.delete(memory_id)
        db = self._mem0.db
        with db._lock:
            marks = ",".join("?" * len(memory_ids))
            if memory_ids:
                db.connection.execute(f"DELETE FROM history WHERE memory_id IN ({marks})", memory_ids)  # noqa: S608
            db.connection.execute("DELETE FROM messages WHERE session_scope LIKE ?", (f"%{person_id}%",))
            db.connection.commit()
            db.connection.execute("VACUUM")
        if not self.settings.qdrant_url:  # embedded Qdrant: rebuild its SQLite files without the points
            from mem0 import Memory

            self._mem0.vector_store.client.close()
            self._mem0.close()
            self._mem0 = None
            for storage in (self.settings.memory_folder / "qdrant").rglob("storage.sqlite"):
                with sqlite3.connect(storage) as conn:
                    conn.execute("VACUUM")
            self._mem0 = Memory.from_config(self._config)
            self._mem0.db.connection.execute("PRAGMA secure_delete=ON")

    def learn_later(self, message: IncomingMessage) -> None:
        """Learn from `message` in the background: the caller (a reply just sent) never waits."""
        task = asyncio.create_task(self.learn(message), name=f"memory-{message.message_id}")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def learn(self, message: IncomingMessage) -> int:
        """Extract facts from what the person said, guard them, store the rest. Returns how many were stored.

        Never raises: failures and timeouts (MEMORY_TIMEOUT) log one warning and store nothing.
        """
        if message.kind is not ContentKind.TEXT or self._mem0 is None:
            return 0
        try:
            return await asyncio.wait_for(self._learn(message), self.settings.memory_timeout)
        except TimeoutError:
            log.warning("memory write timed out after %g s: nothing stored", self.settings.memory_timeout)
        except Exception as exc:
            log.warning("memory write failed (%s): nothing stored", type(exc).__name__)
        return 0

    async def _learn(self, message: IncomingMessage) -> int:
        existing = await self._on_thread(
            lambda: [text for _, text in self._search(message.text, [{"user_id": message.person_id}])]
        )
        chain = self.prompts.extraction | self._extraction_model | StrOutputParser()
        answer = await chain.ainvoke(
            {
                "speaker_nick": message.sender_nick or "用户",
                "existing": "\n".join(f"  - {text}" for text in existing) or "  （暂无）",
                "text": message.text,
            }
        )
        facts = []
        for fact in parse_facts(answer):
            reason = unsafe_reason(fact)
            if reason:
                log.info("memory guard dropped an extracted fact (%s)", reason)
            elif fact not in existing and fact not in facts:
                facts.append(fact)
        if not facts:
            return 0
        where = {
            "chat": "group" if message.is_group else "direct",
            "conversation_id": message.conversation_id,
        }

        def store() -> None:
            for fact in facts:
                self._mem0.add(
                    [{"role": "user", "content": fact}],
                    user_id=message.person_id,
                    metadata=where,
                    infer=False,
                )

        await self._on_thread(store)
        log.info("memory: stored %d fact(s)", len(facts))
        return len(facts)
