"""The mem0 adapter: opening the store, searching, adding, listing and erasing. Synchronous: every call
runs on the memory service's single thread (the embedded Qdrant folder allows one client).

Three places for the vectors: the embedded Qdrant folder beside DATABASE_PATH (one process; searched
through the in-process per-person index, preloaded), a Chroma server shared by replicas (CHROMA_URL; the
same index, loaded per person on first use and dropped for a person when any replica changes them:
agent/memory/service.py), or a Qdrant server (QDRANT_URL; searched on the server). With a server,
mem0's own history (a log of every add and delete, with the text) is kept in memory only: we never read
it, and a file per replica would keep erased text where `/forget all` does not reach.

mem0 is imported here, lazily, after MEM0_TELEMETRY and MEM0_DIR are set (docs/architecture.md invariant 7).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from agent.errors import ConfigError
from agent.memory.chroma import COLLECTION, chroma_client, chroma_dims, chroma_points
from agent.memory.embeddings import MemoryEmbeddings
from agent.memory.failures import lock_file
from agent.memory.index import PersonIndex
from agent.settings.config import Settings


class Mem0Store:
    """Thread-safe for its users: `search` and `knows` may run on a recall thread while the memory
    thread adds and erases (the store's calls take `_lock`; the index has its own)."""

    def __init__(self, memory: Any, *, embedded: bool, dims: int = 0, chroma: bool = False) -> None:
        self._memory = memory
        self._embedded = embedded  # the embedded Qdrant folder: one owner, the whole index preloaded
        self._chroma = chroma  # a Chroma server: each person's vectors loaded on first use
        self._dims = dims
        self._lock = threading.RLock()
        self._index = PersonIndex(self._load_person)
        # Whether the index may answer: always for the embedded store; on Chroma only while every write by
        # another replica is heard of (MemoryService: a notice through the shared database). QDRANT_URL:
        # never (the server is searched).
        self.cache_trusted = embedded or chroma

    @property
    def _cached(self) -> bool:
        return (self._embedded or self._chroma) and self.cache_trusted

    def invalidate(self, person_id: str | None) -> None:
        """Another replica changed this person's memories (None: anybody's): loaded again on next use."""
        self._index.invalidate(person_id)

    def _points(self, person_id: str | None) -> Iterator[tuple[str, str, str, dict[str, Any], list[float]]]:
        """(person, id, text, payload, vector) of every stored memory, or of one person's."""
        from qdrant_client import models

        client = self._memory.vector_store.client
        only = None
        if person_id is not None:
            condition = models.FieldCondition(key="user_id", match=models.MatchValue(value=person_id))
            only = models.Filter(must=[condition])
        offset = None
        while True:
            batch, offset = client.scroll(
                COLLECTION,
                scroll_filter=only,
                limit=1000,
                offset=offset,
                with_payload=True,
                with_vectors=True,
            )
            for point in batch:
                payload = point.payload or {}
                person = str(payload.get("user_id", ""))
                yield person, str(point.id), str(payload.get("data", "")), payload, _dense(point.vector)
            if offset is None:
                return

    def _load_person(self, person_id: str) -> list[tuple[str, str, dict[str, Any], list[float]]]:
        if self._chroma:  # no store lock: recalls must not queue behind a slow write
            return [row[1:] for row in chroma_points(self._memory.vector_store.collection, person_id)]
        with self._lock:
            return [row[1:] for row in self._points(person_id)]

    def preload(self) -> int:
        """Load every person's vectors into the index (at startup; on Chroma also each time a replica
        starts hearing the others again); returns how many people."""
        if self._chroma:  # read first, outside every lock: recalls meanwhile search the server
            return self._index.preload(list(chroma_points(self._memory.vector_store.collection)))
        with self._lock:
            return self._index.preload(self._points(None))

    @classmethod
    def open(
        cls, settings: Settings, *, extraction_model: BaseChatModel, embeddings: Embeddings
    ) -> Mem0Store:
        folder = settings.memory_folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["MEM0_TELEMETRY"] = "False"  # before the first import: no calls home, no ~/.mem0 store
        os.environ.setdefault("MEM0_DIR", str(folder / "mem0"))
        logging.getLogger("mem0").setLevel(
            logging.ERROR
        )  # memory text at INFO, missing-extras noise at WARNING

        embeddings = MemoryEmbeddings(embeddings)
        probed = probe_dims(settings, embeddings)
        if settings.chroma_url:
            vector_store: dict[str, Any] = {
                "provider": "chroma",
                "config": {  # the client is ours (no telemetry); host and port only satisfy mem0's checks
                    "collection_name": COLLECTION,
                    "client": chroma_client(settings.chroma_url),
                    "host": urlsplit(settings.chroma_url).hostname,
                    "port": urlsplit(settings.chroma_url).port or 8000,
                },
            }
            stored = chroma_dims(vector_store["config"]["client"], probed)
        else:
            qdrant: dict[str, Any] = {
                "collection_name": COLLECTION,
                "embedding_model_dims": probed,
                "on_disk": True,
            }
            if settings.qdrant_url:
                qdrant["url"] = settings.qdrant_url
            else:
                qdrant["path"] = str(folder / "qdrant")
            vector_store = {"provider": "qdrant", "config": qdrant}
            stored = None
        config = {
            # mem0 makes no LLM call (we add with infer=False) but its config needs a model
            "llm": {"provider": "langchain", "config": {"model": extraction_model}},
            "embedder": {"provider": "langchain", "config": {"model": embeddings, "embedding_dims": probed}},
            "vector_store": vector_store,
            "history_db_path": ":memory:" if settings.vector_server else str(folder / "mem0_history.db"),
        }
        store = cls(
            _open_memory(config),
            embedded=not settings.vector_server,
            dims=probed,
            chroma=bool(settings.chroma_url),
        )
        if stored is None:
            stored = store._memory.vector_store.client.get_collection(COLLECTION).config.params.vectors.size
        if stored != probed:
            store.close()
            raise _mismatch(settings.vector_server or str(folder), stored, probed)
        if store._embedded:
            store.preload()
        return store

    @property
    def dims(self) -> int:
        """The vector size of the stored collection (equal to the embedder's: checked at open)."""
        return self._dims

    def close(self) -> None:
        close = getattr(self._memory.vector_store.client, "close", None)  # a Chroma HttpClient has none
        if close is not None:
            close()  # Memory.close() only closes mem0's SQLite
        self._memory.close()

    def search(self, query: str, scopes: list[dict[str, Any]], top_k: int) -> list[tuple[float, str]]:
        """(score, text) of the best memories across the scopes (equality filters), best first."""
        return [(score, text) for score, _, text in self.search_ids(query, scopes, top_k)]

    def search_ids(
        self, query: str, scopes: list[dict[str, Any]], top_k: int
    ) -> list[tuple[float, str, str]]:
        """(score, id, text) of the best memories across the scopes, best first. Where the index holds
        nothing in any scope (most people, most of the time) the query is not embedded at all."""
        if self._cached and not any(self._index.holds(scope) for scope in scopes):
            return []
        return self.search_vector(self._memory.embedding_model.embed(query, "search"), scopes, top_k)

    def search_vector(
        self, vector: list[float], scopes: list[dict[str, Any]], top_k: int
    ) -> list[tuple[float, str, str]]:
        found: dict[str, tuple[float, str]] = {}
        for scope in scopes:
            if self._cached:
                hits = self._index.search(vector, scope, top_k)
            else:  # a server whose changes this replica would not hear of: searched there
                hits = [
                    (float(h.score or 0.0), str(h.id), str((h.payload or {}).get("data", "")))
                    for h in self._memory.vector_store.search(
                        query="", vectors=vector, top_k=top_k, filters=scope
                    )
                ]
            for score, memory_id, text in hits:
                if memory_id not in found or found[memory_id][0] < score:
                    found[memory_id] = (score, text)
        ranked = sorted(
            ((score, memory_id, text) for memory_id, (score, text) in found.items()), reverse=True
        )
        return ranked[:top_k]

    def export(self) -> Iterator[dict[str, Any]]:
        """Every stored memory with its vector and payload (where it was learned), for `dingbot export`.
        From the embedded store only: a server is shared already, nothing to move."""
        if not self._embedded:
            raise ConfigError("export reads the embedded memory folder: unset CHROMA_URL and QDRANT_URL")
        with self._lock:
            for person, memory_id, text, payload, vector in self._points(None):
                yield {
                    "id": memory_id,
                    "person_id": person,
                    "text": text,
                    "payload": payload,
                    "vector": vector,
                }

    def import_memories(self, memories: list[dict[str, Any]]) -> int:
        """Put exported memories here with their ids, vectors and payloads (no re-embedding); a memory
        already here (same id) is skipped. Returns how many were added."""
        with self._lock:
            fresh = [m for m in memories if not self._memory.vector_store.get(str(m["id"]))]
            for start in range(0, len(fresh), 500):
                batch = fresh[start : start + 500]
                if any(len(m["vector"]) != self._dims for m in batch):
                    raise ConfigError(
                        f"the exported memories' vectors do not have {self._dims} dims as this embedder's "
                        "do: import with the embedder that made them (EMBEDDING_PROVIDER, EMBEDDING_MODEL)"
                    )
                self._memory.vector_store.insert(
                    vectors=[m["vector"] for m in batch],
                    payloads=[m["payload"] for m in batch],
                    ids=[str(m["id"]) for m in batch],
                )
                for m in batch if self._embedded else []:
                    self._index.added(
                        str(m["person_id"]), str(m["id"]), str(m["text"]), m["payload"], m["vector"]
                    )
            return len(fresh)

    def all_of(self, person_id: str) -> list[dict[str, Any]]:
        """Every memory of a person (id, memory, metadata...), oldest first: from the index where it holds
        them (no scan of the store), else mem0's listing."""
        if self._cached:
            rows = [
                {
                    "id": memory_id,
                    "memory": text,
                    "metadata": payload,
                    "created_at": payload.get("created_at"),
                }
                for memory_id, text, payload in self._index.everything(person_id)
            ]
            return sorted(rows, key=lambda item: str(item.get("created_at") or ""))
        with self._lock:
            found = self._memory.get_all(filters={"user_id": person_id}, top_k=10_000)
        items: list[dict[str, Any]] = found.get("results", [])
        return sorted(items, key=lambda item: str(item.get("created_at") or ""))

    def people_like(self, fragment: str, limit: int = 100) -> list[str]:
        """Ids of people with memories whose id contains `fragment`: from the index where it holds everyone,
        else a scan of the embedded store (a server setup answers only from what this replica loaded)."""
        people = self._index.people() if self._cached else set()
        if self._embedded and not people:
            with self._lock:
                people = {person for person, *_ in self._points(None)}
        return sorted(p for p in people if fragment in p)[:limit]

    def recent(self, scopes: list[dict[str, Any]], limit: int) -> list[tuple[str, str]]:
        """(id, text) of what is already known in these scopes (the most recent), for the extraction
        prompt: from the index, so it costs no embedding; with a server, a scoped listing."""
        entries: dict[str, str] = {}
        for scope in scopes:
            if self._cached:
                found = self._index.entries(str(scope["user_id"]), scope, limit)
            else:
                with self._lock:
                    items = self._memory.get_all(filters=scope, top_k=limit).get("results", [])
                found = [(str(item["id"]), str(item.get("memory", ""))) for item in items]
            entries.update(found)
        return list(entries.items())[-limit:]

    def erase_own(self, memory_ids: list[str], person_id: str) -> list[str]:
        """Erase those of `memory_ids` that are still stored and are this person's (an update replacing a
        known fact: never anyone else's, and nothing a concurrent /forget took already); the ids erased."""
        with self._lock:
            own = [
                memory_id
                for memory_id in memory_ids
                if (point := self._memory.vector_store.get(memory_id)) is not None
                and (point.payload or {}).get("user_id") == person_id
            ]
            if own:
                self._erase(own, person_id)
            return own

    def knows(self, person_id: str, fact: str, where: dict[str, str]) -> bool:
        """Whether the person already has exactly this memory there (so it is not stored twice)."""
        if self._cached:
            return self._index.knows(person_id, fact, where)
        with self._lock:
            found = self._memory.get_all(filters={"user_id": person_id, **where}, top_k=10_000)
        return any(item.get("memory") == fact for item in found.get("results", []))

    def add(self, fact: str, person_id: str, where: dict[str, str]) -> list[str]:
        """Store a fact; the ids it got."""
        with self._lock:
            return self._add(fact, person_id, where)

    def _add(self, fact: str, person_id: str, where: dict[str, str]) -> list[str]:
        result = self._memory.add(
            [{"role": "user", "content": fact}], user_id=person_id, metadata=where, infer=False
        )
        ids = [str(item["id"]) for item in result.get("results", []) if item.get("id")]
        if not self._embedded:
            self._index.invalidate(person_id)  # loaded again, with this one, from the server
            return ids
        for point in self._memory.vector_store.client.retrieve(COLLECTION, ids=ids, with_vectors=True):
            self._index.added(person_id, str(point.id), fact, point.payload or {}, _dense(point.vector))
        return ids

    def erase(self, memory_ids: list[str], person_id: str) -> None:
        with self._lock:
            self._erase(memory_ids, person_id)

    def _erase(self, memory_ids: list[str], person_id: str) -> None:
        """Delete memories so that no copy survives in the files: the vectors, mem0's history rows (which
        keep the deleted text) and raw messages. Every SQLite connection holding them has `secure_delete`
        on, so the freed pages are zeroed; no close, rebuild or reopen (which would stall recalls)."""
        for memory_id in memory_ids:
            self._memory.delete(memory_id)
        self._index.removed(person_id, memory_ids)
        from mem0.memory.main import _build_session_scope  # mem0 is pinned: its own scope format

        db = self._memory.db
        with db._lock:
            if memory_ids:
                marks = ",".join("?" * len(memory_ids))
                db.connection.execute(f"DELETE FROM history WHERE memory_id IN ({marks})", memory_ids)  # noqa: S608
            # raw messages mem0 kept for this person (none with infer=False, but a store may hold older ones)
            scope = _build_session_scope({"user_id": person_id})
            db.connection.execute("DELETE FROM messages WHERE session_scope = ?", (scope,))
            db.connection.commit()


def probe_dims(settings: Settings, embeddings: Embeddings) -> int:
    """The embedder's vector size (one call; it also warms the embedder), checked against EMBEDDING_DIMS."""
    probed = len(embeddings.embed_query("维度探测 dimension probe"))
    if settings.embedding_dims is not None and settings.embedding_dims != probed:
        raise ConfigError(
            f"EMBEDDING_DIMS={settings.embedding_dims} but the embedder returns {probed}-dim vectors: "
            "unset EMBEDDING_DIMS or correct it"
        )
    return probed


def _mismatch(where: Path | str, stored: int, probed: int) -> ConfigError:
    away = "move that folder away" if isinstance(where, Path) else f"use another collection than {COLLECTION}"
    return ConfigError(
        f"the stored memories in {where} have {stored}-dim vectors but the embedder gives {probed}: "
        f"set EMBEDDING_PROVIDER/EMBEDDING_MODEL back to what wrote them, or {away}"
    )


def check_stored_dims(settings: Settings, embeddings: Embeddings) -> None:
    """Before the service starts: the embedded collection's vector size (from Qdrant's meta.json, without
    opening the folder) must match the embedder. An embedder that cannot answer is not an error here:
    the service then starts without long-term memory and says why."""
    folder = settings.memory_folder.resolve()
    meta = folder / "qdrant" / "meta.json"
    if settings.qdrant_url or not meta.is_file():
        return
    try:
        stored = int(json.loads(meta.read_text())["collections"][COLLECTION]["vectors"]["size"])
    except (ValueError, KeyError, TypeError):
        return
    try:
        probed = probe_dims(settings, embeddings)
    except ConfigError:
        raise
    except Exception:
        return
    if stored != probed:
        raise _mismatch(folder, stored, probed)


def _dense(vector: Any) -> list[float]:
    """A point's dense vector (Qdrant returns a list, or a dict when vectors are named)."""
    if isinstance(vector, dict):
        vector = vector.get("") or next(iter(vector.values()))
    return [float(x) for x in vector]


def _open_memory(config: dict[str, Any]) -> Any:
    from mem0 import Memory

    memory = Memory.from_config(config)
    memory.db.connection.execute("PRAGMA secure_delete=ON")  # deleted history text is zeroed on disk
    client = memory.vector_store.client
    if config["vector_store"]["config"].get("path"):
        # Embedded Qdrant keeps points in one SQLite file per collection; zero deleted points there too.
        # (qdrant-client is pinned; this reaches its local persistence, which has no public setting.)
        try:
            client._client.collections[COLLECTION].storage.storage.execute("PRAGMA secure_delete=ON")
        except (AttributeError, KeyError) as exc:
            client.close()
            memory.close()
            raise RuntimeError("cannot enable secure_delete on the embedded Qdrant storage") from exc
    return memory


def held_by_another_process(settings: Settings) -> bool:
    """True when another client (a running service) holds the embedded store folder. Probes Qdrant's
    own lock file without opening the store (docs/architecture.md: one owner per folder)."""
    if settings.qdrant_url:
        return False
    lock_path = lock_file(settings)
    if not lock_path.is_file():
        return False
    import portalocker

    with lock_path.open("r+") as lock:
        try:
            portalocker.lock(lock, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
        except portalocker.exceptions.LockException:
            return True
        portalocker.unlock(lock)
    return False
