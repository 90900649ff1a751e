"""A per-person vector index in memory, in front of the store.

The embedded Qdrant scans every point of the collection for a filtered search (≈ 60–140 ms at 1k–3k
memories here, growing with the whole store). Memories are always searched within one person, so
each person's vectors are kept as one normalised numpy matrix, preloaded from the store at startup and
updated on add and erase: a search is one matrix-vector product over that person's rows only.
The store stays the record. Past `max_people` the least recently used people are dropped and loaded
again on first use. Thread-safe: recalls search on their own thread while the memory thread writes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Row = tuple[str, str, dict[str, Any], list[float]]  # id, text, payload, vector


@dataclass
class PersonMemories:
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    places: list[dict[str, Any]] = field(default_factory=list)  # payload fields a scope may filter on
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    def append(self, memory_id: str, text: str, place: dict[str, Any], vector: list[float]) -> None:
        row = _normalise(np.asarray([vector], dtype=np.float32))
        self.matrix = row if self.matrix.size == 0 else np.vstack([self.matrix, row])
        self.ids.append(memory_id)
        self.texts.append(text)
        self.places.append(place)

    def remove(self, memory_ids: set[str]) -> None:
        keep = [i for i, memory_id in enumerate(self.ids) if memory_id not in memory_ids]
        self.ids = [self.ids[i] for i in keep]
        self.texts = [self.texts[i] for i in keep]
        self.places = [self.places[i] for i in keep]
        self.matrix = self.matrix[keep] if keep else np.zeros((0, 0), dtype=np.float32)

    def rows_in(self, scope: dict[str, Any]) -> list[int]:
        conditions = {k: v for k, v in scope.items() if k != "user_id"}
        return [
            i for i, place in enumerate(self.places) if all(place.get(k) == v for k, v in conditions.items())
        ]


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


class PersonIndex:
    def __init__(self, load: Callable[[str], Iterable[Row]], max_people: int = 5000) -> None:
        self._load = load  # person_id → every memory of that person, from the store
        self._people: OrderedDict[str, PersonMemories] = OrderedDict()
        self._max_people = max_people
        self._complete = False  # True: every person with memories is in the index
        self._lock = threading.Lock()
        self._changes: dict[str, int] = {}  # person -> invalidations so far (a load that saw one is not kept)
        self._resets = 0
        self._stale: set[str] = set()  # changed elsewhere since the preload: loaded again, not taken as empty

    def preload(self, rows: Iterable[tuple[str, str, str, dict[str, Any], list[float]]]) -> int:
        """Fill the index from (person, id, text, payload, vector) rows — the whole store, at startup — so
        no reply pays a load, and a person not in the index has no memories. Returns how many people."""
        with self._lock:
            seen = self._resets
            complete = True
            for person_id, memory_id, text, payload, vector in rows:
                memories = self._people.get(person_id)
                if memories is None:
                    if len(self._people) >= self._max_people:
                        complete = False  # the rest load on first use
                        continue
                    memories = self._people[person_id] = PersonMemories()
                memories.append(memory_id, text, payload, vector)
            if self._resets != seen:  # everything was dropped while this ran: it is not kept
                self._people.clear()
                return 0
            self._complete = complete
            return len(self._people)

    def _person(self, person_id: str) -> PersonMemories:
        with self._lock:
            memories = self._people.get(person_id)
            if memories is None and self._complete and person_id not in self._stale:
                memories = self._people[person_id] = PersonMemories()
            if memories is not None:
                self._people.move_to_end(person_id)
                return memories
            seen = (self._changes.get(person_id, 0), self._resets)
        loaded = PersonMemories()  # load outside the lock: the loader takes the store's own lock
        for memory_id, text, payload, vector in self._load(person_id):
            loaded.append(memory_id, text, payload, vector)
        with self._lock:
            if (self._changes.get(person_id, 0), self._resets) != seen:
                return loaded  # changed elsewhere while loading: good for this call, not kept
            memories = self._people.setdefault(person_id, loaded)
            self._stale.discard(person_id)
            while len(self._people) > self._max_people:
                self._people.popitem(last=False)
                self._complete = False
            return memories

    def search(self, vector: list[float], scope: dict[str, Any], top_k: int) -> list[tuple[float, str, str]]:
        """(score, id, text) of the best `top_k` memories in `scope` ({"user_id": …, other equalities})."""
        memories = self._person(str(scope["user_id"]))
        with self._lock:
            rows = memories.rows_in(scope) if memories.ids and top_k > 0 else []
            if not rows:
                return []
            query = _normalise(np.asarray([vector], dtype=np.float32))[0]
            scores = memories.matrix[rows] @ query
            best = np.argsort(-scores)[:top_k]
            return [(float(scores[i]), memories.ids[rows[i]], memories.texts[rows[i]]) for i in best]

    def holds(self, scope: dict[str, Any]) -> bool:
        """Whether `scope` has a memory to rank (a search there would find something)."""
        memories = self._person(str(scope["user_id"]))
        with self._lock:
            return bool(memories.ids) and bool(memories.rows_in(scope))

    def entries(self, person_id: str, scope: dict[str, Any], limit: int) -> list[tuple[str, str]]:
        """(id, text) of the person's most recent `limit` memories in `scope`, without embedding anything."""
        memories = self._person(person_id)
        with self._lock:
            return [(memories.ids[i], memories.texts[i]) for i in memories.rows_in(scope)][-limit:]

    def everything(self, person_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(id, text, payload) of every memory of the person, without asking the store (the console)."""
        memories = self._person(person_id)
        with self._lock:
            return list(zip(memories.ids, memories.texts, memories.places, strict=True))

    def knows(self, person_id: str, text: str, scope: dict[str, Any]) -> bool:
        """Whether the person already has exactly this memory in this scope."""
        memories = self._person(person_id)
        with self._lock:
            return any(memories.texts[i] == text for i in memories.rows_in(scope))

    def added(
        self, person_id: str, memory_id: str, text: str, payload: dict[str, Any], vector: list[float]
    ) -> None:
        with self._lock:
            memories = self._people.get(person_id)
            if memories is None and self._complete:
                memories = self._people[person_id] = PersonMemories()
            if memories is not None:  # otherwise it is loaded with everything else on first use
                memories.append(memory_id, text, payload, vector)

    def people(self) -> set[str]:
        """The people the index holds now (everyone with memories once preloaded)."""
        with self._lock:
            return {person for person, memories in self._people.items() if memories.ids}

    def invalidate(self, person_id: str | None) -> None:
        """Another process changed this person's memories (None: anyone's, e.g. notices were missed): the
        next use loads them again; a load already under way is not kept."""
        with self._lock:
            if person_id is None:
                self._people.clear()
                self._complete = False
                self._resets += 1
                self._changes.clear()
                self._stale.clear()
            else:
                self._people.pop(person_id, None)
                self._changes[person_id] = self._changes.get(person_id, 0) + 1
                if self._complete:
                    self._stale.add(person_id)

    def removed(self, person_id: str, memory_ids: Iterable[str]) -> None:
        with self._lock:
            if person_id in self._people:
                self._people[person_id].remove(set(memory_ids))
