"""Build the real Assistant (real SQLite history, real prompts) for tests that talk to it directly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from agent.assembly import open_agent
from agent.assistant import Assistant
from agent.messages import IncomingMessage
from agent.settings.config import Settings


@asynccontextmanager
async def open_assistant(
    settings: Settings,
    model: BaseChatModel | None = None,
    clock: Callable[[], datetime] | None = None,
    *,
    memory: bool = False,
    extraction_model: BaseChatModel | None = None,
    summary_model: BaseChatModel | None = None,
    embeddings: Embeddings | None = None,
) -> AsyncIterator[Assistant]:
    """The assistant the service builds; `model` replaces the one the settings describe.

    With `memory=True` it gets the real MemoryService (real mem0, embedded Qdrant beside the database);
    `extraction_model`, `summary_model` and `embeddings` replace the ones the settings describe.
    """
    async with open_agent(
        settings,
        memory=memory,
        model=model,
        extraction_model=extraction_model,
        summary_model=summary_model,
        embeddings=embeddings,
        clock=clock,
    ) as agent:
        yield agent.assistant


def person_message(text: str = "你好", **fields: Any) -> IncomingMessage:
    """A one-to-one message from 张三 (override any field)."""
    values: dict[str, Any] = {
        "message_id": "m1",
        "conversation_id": "cid1",
        "is_group": False,
        "person_id": "corp:u1",
        "sender_id": "$:u1",
        "sender_staff_id": "u1",
        "sender_nick": "张三",
        "text": text,
    }
    values.update(fields)
    return IncomingMessage(**values)
