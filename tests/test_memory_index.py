"""The per-person vector index: scoping, ranking, updates, eviction."""

from __future__ import annotations

from typing import Any

from agent.memory.index import PersonIndex

ROWS: dict[str, list[tuple[str, str, dict[str, Any], list[float]]]] = {
    "alice": [
        ("a1", "likes tea", {"chat": "direct", "conversation_id": "c1"}, [1.0, 0.0, 0.0]),
        ("a2", "likes cats", {"chat": "group", "conversation_id": "g1"}, [0.0, 1.0, 0.0]),
        ("a3", "likes coffee", {"chat": "direct", "conversation_id": "c2"}, [0.9, 0.1, 0.0]),
    ],
    "bob": [("b1", "likes tea too", {"chat": "direct", "conversation_id": "c9"}, [1.0, 0.0, 0.0])],
}


def make() -> tuple[PersonIndex, list[str]]:
    loads: list[str] = []

    def load(person: str) -> list[tuple[str, str, dict[str, Any], list[float]]]:
        loads.append(person)
        return ROWS.get(person, [])

    return PersonIndex(load, max_people=2), loads


def test_ranked_within_one_person_only() -> None:
    index, _ = make()
    hits = index.search([1.0, 0.0, 0.0], {"user_id": "alice"}, 5)
    assert [h[1] for h in hits] == ["a1", "a3", "a2"]
    assert all(not h[2].endswith("too") for h in hits)


def test_scope_conditions_filter_rows() -> None:
    index, _ = make()
    assert [h[1] for h in index.search([1.0, 0.0, 0.0], {"user_id": "alice", "chat": "group"}, 5)] == ["a2"]
    assert index.search([1.0, 0.0, 0.0], {"user_id": "alice", "conversation_id": "nope"}, 5) == []
    assert index.search([1.0, 0.0, 0.0], {"user_id": "nobody"}, 5) == []


def test_top_k_and_updates() -> None:
    index, loads = make()
    assert len(index.search([0.0, 0.0, 1.0], {"user_id": "alice"}, 2)) == 2
    index.added("alice", "a4", "likes jazz", {"chat": "direct"}, [0.0, 0.0, 2.0])  # normalised on the way in
    top = index.search([0.0, 0.0, 1.0], {"user_id": "alice"}, 1)
    assert top[0][1] == "a4"
    assert abs(top[0][0] - 1.0) < 1e-6
    index.removed("alice", ["a4", "a1"])
    assert [h[1] for h in index.search([1.0, 0.0, 0.0], {"user_id": "alice"}, 5)] == ["a3", "a2"]
    assert loads == ["alice"]  # loaded once, then kept up to date


def test_least_recently_used_people_are_evicted_and_reloaded() -> None:
    index, loads = make()
    for person in ("alice", "bob", "carol", "alice"):
        index.search([1.0, 0.0, 0.0], {"user_id": person}, 1)
    assert loads == ["alice", "bob", "carol", "alice"]
