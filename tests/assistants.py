"""Build the real Assistant (real SQLite history, real prompts) for tests that talk to it directly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from agent.assistant import Assistant
from agent.config import Settings
from agent.database import Database
from agent.embeddings import build_embeddings
from agent.history import HistoryStore
from agent.llm import build_chat_model, build_extraction_model
from agent.memory import MemoryService
from agent.messages import IncomingMessage
from agent.prompts import load_prompts


@asynccontextmanager
async def open_assistant(
    settings: Settings,
    model: BaseChatModel | None = None,
    clock: Callable[[], datetime] | None = None,
    *,
    memory: bool = False,
    extraction_model: BaseChatModel | None = None,
    embeddings: Embeddings | None = None,
) -> AsyncIterator[Assistant]:
    """The assistant the service builds; `model` replaces the one the settings describe.

    With `memory=True` it gets the real MemoryService (real mem0, embedded Qdrant beside the database);
    `extraction_model` and `embeddings` replace the ones the settings describe.
    """
    database = Database(settings.database_path)
    await database.open()
    service: MemoryService | None = None
    try:
        prompts = load_prompts(settings.prompts_dir)
        if model is None:
            model = build_chat_model(settings, mock_reply_template=prompts.reply_template("mock_reply"))
        if memory:
            service = MemoryService(
                settings,
                prompts=prompts,
                extraction_model=extraction_model or build_extraction_model(settings, model),
                embeddings=embeddings or build_embeddings(settings),
                database=database,
            )
            await service.open()
        yield Assistant(
            settings=settings,
            prompts=prompts,
            model=model,
            history=HistoryStore(database, settings.history_turns),
            memory=service,
            clock=clock,
        )
    finally:
        if service is not None:
            await service.close()
        await database.close()


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
