"""A per-person vector index in memory, in front of the store.

The embedded Qdrant scans every point of the collection for a filtered search (≈ 60–140 ms at 1k–3k
memories here, growing with the whole store). Memories are always searched within one person, so
each person's vectors are kept as one normalised numpy matrix, loaded from the store on first use and
updated on add and erase: a search is one matrix-vector product over that person's rows only.
The store stays the record; this is a cache (least recently used people are dropped past `max_people`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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


Loader = Callable[[str], Iterable[tuple[str, str, dict[str, Any], list[float]]]]


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


class PersonIndex:
    def __init__(self, load: Loader, max_people: int = 2000) -> None:
        self._load = load  # person_id → (id, text, payload, vector) of every memory of that person
        self._people: OrderedDict[str, PersonMemories] = OrderedDict()
        self._max_people = max_people

    def preload(self, rows: Iterable[tuple[str, str, str, dict[str, Any], list[float]]]) -> int:
        """Fill the index from (person, id, text, payload, vector) rows, e.g. the whole store at startup,
        so no reply pays a person's first load. Returns how many people were loaded."""
        for person_id, memory_id, text, payload, vector in rows:
            memories = self._people.get(person_id)
            if memories is None:
                if len(self._people) >= self._max_people:
                    continue  # the rest load on first use
                memories = self._people[person_id] = PersonMemories()
            memories.append(memory_id, text, payload, vector)
        return len(self._people)

    def _person(self, person_id: str) -> PersonMemories:
        memories = self._people.get(person_id)
        if memories is None:
            memories = PersonMemories()
            for memory_id, text, payload, vector in self._load(person_id):
                memories.append(memory_id, text, payload, vector)
            self._people[person_id] = memories
            while len(self._people) > self._max_people:
                self._people.popitem(last=False)
        self._people.move_to_end(person_id)
        return memories

    def search(self, vector: list[float], scope: dict[str, Any], top_k: int) -> list[tuple[float, str, str]]:
        """(score, id, text) of the best `top_k` memories in `scope` ({"user_id": …, other equalities})."""
        memories = self._person(str(scope["user_id"]))
        if not memories.ids or top_k <= 0:
            return []
        conditions = {k: v for k, v in scope.items() if k != "user_id"}
        rows = [
            i
            for i, place in enumerate(memories.places)
            if all(place.get(k) == v for k, v in conditions.items())
        ]
        if not rows:
            return []
        query = _normalise(np.asarray([vector], dtype=np.float32))[0]
        scores = memories.matrix[rows] @ query
        best = np.argsort(-scores)[:top_k]
        return [(float(scores[i]), memories.ids[rows[i]], memories.texts[rows[i]]) for i in best]

    def added(
        self, person_id: str, memory_id: str, text: str, payload: dict[str, Any], vector: list[float]
    ) -> None:
        if person_id in self._people:  # not cached yet: it is loaded with everything else on first use
            self._people[person_id].append(memory_id, text, payload, vector)

    def removed(self, person_id: str, memory_ids: Iterable[str]) -> None:
        if person_id in self._people:
            self._people[person_id].remove(set(memory_ids))
