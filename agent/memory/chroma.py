"""A Chroma server for long-term memory (CHROMA_URL): the client, our collection, reading vectors back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

COLLECTION = "dingbot_memories"  # the same name in every store (embedded Qdrant too)
PAGE = 1000

Point = tuple[str, str, str, dict[str, Any], list[float]]  # person, id, text, payload, vector


def chroma_client(url: str) -> Any:
    """A client of the Chroma server at `url` (no telemetry)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    parts = urlsplit(url)
    ssl = parts.scheme == "https"
    return chromadb.HttpClient(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (443 if ssl else 8000),
        ssl=ssl,
        settings=ChromaSettings(anonymized_telemetry=False),
    )


def chroma_dims(client: Any, probed: int) -> int:
    """Our collection on the Chroma server (made with cosine distance and the vector size it holds, before
    mem0 opens it as it is); returns the size its vectors have."""
    collection = client.get_or_create_collection(
        COLLECTION, metadata={"hnsw:space": "cosine", "dingbot_dims": probed}
    )
    return int((collection.metadata or {}).get("dingbot_dims", probed))


def chroma_points(collection: Any, person_id: str | None = None) -> Iterator[Point]:
    """Every stored memory with its vector, or one person's, a page at a time."""
    where = {"user_id": person_id} if person_id is not None else None
    offset = 0
    while True:
        found = collection.get(where=where, include=["embeddings", "metadatas"], limit=PAGE, offset=offset)
        for memory_id, payload, vector in zip(
            found["ids"], found["metadatas"] or [], found["embeddings"], strict=True
        ):
            data = dict(payload or {})
            text = str(data.get("data", ""))
            yield str(data.get("user_id", "")), str(memory_id), text, data, [float(x) for x in vector]
        if len(found["ids"]) < PAGE:
            return
        offset += PAGE
