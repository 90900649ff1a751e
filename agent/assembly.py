"""Put the agent together from settings: database, prompts, model, history, memory, assistant.

One place, so the service (api/app.py's lifespan), `dingbot chat` and the tests run the very same
assistant. The caller owns the context: everything opened here is closed when it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from agent.assistant import Assistant
from agent.limits import SharedRateLimiter
from agent.media.context import FileContext
from agent.media.reader import MediaSource
from agent.media.service import MediaService
from agent.memory.embeddings import build_embeddings
from agent.memory.history import HistoryStore
from agent.memory.service import MemoryService
from agent.memory.summary import Summaries
from agent.model.factory import build_chat_model, build_extraction_model, build_summary_model
from agent.model.tokens import count_tokens
from agent.model.usage import UsageBook, UsageCallback, count_usage_of
from agent.observe import Observer
from agent.prompts.library import PromptLibrary
from agent.settings.config import Settings
from agent.storage.database import Database
from agent.tools.reminders import ReminderBook
from agent.tools.toolbox import McpTools, Reachability, Toolbox


@dataclass(frozen=True)
class AgentParts:
    database: Database
    prompts: PromptLibrary
    history: HistoryStore
    memory: MemoryService | None
    assistant: Assistant
    reminders: ReminderBook
    summaries: Summaries
    usage: UsageBook


@asynccontextmanager
async def open_agent(
    settings: Settings,
    *,
    memory: bool = True,
    prompts: PromptLibrary | None = None,
    model: BaseChatModel | None = None,
    extraction_model: BaseChatModel | None = None,
    summary_model: BaseChatModel | None = None,
    embeddings: Embeddings | None = None,
    observer: Observer | None = None,
    clock: Callable[[], datetime] | None = None,
    reachability: Reachability | None = None,
    mcp: McpTools | None = None,
    media: MediaSource | None = None,
) -> AsyncIterator[AgentParts]:
    """Open the database and the memory store and build the assistant.

    `memory=False` leaves long-term memory out; `prompts`, `model`, `extraction_model`, `summary_model`
    and `embeddings` replace the ones the settings describe (tests, `dingbot chat`). Raises PromptError for
    prompts that do not load and ConfigError for a memory store whose vectors do not match the embedder.
    `reachability` tells the reminder tool whether a reminder can be delivered at its due time (the
    channel's knowledge); `mcp` adds the operator's MCP tools; `media` fetches pictures and files (the
    channel's file API; None: people are told an admin must add the app credentials).
    """
    if prompts is None:
        prompts = PromptLibrary(settings.prompts_dir)
    library = prompts
    database = Database.for_settings(settings)
    await database.open()
    service: MemoryService | None = None
    summaries: Summaries | None = None
    usage = UsageBook(database, settings.timezone, observer)
    counted = UsageCallback(usage)
    try:
        if model is None or settings.mock_mode:  # mock mode: its own offline extractor, whatever answers
            extraction_model = extraction_model or build_extraction_model(settings)
            summary_model = summary_model or build_summary_model(settings)
        vision_model = None
        if model is None:
            model = build_chat_model(
                settings, mock_reply_template=lambda: library.defaults.reply_template("mock_reply")
            )
            if settings.vision_model and not settings.mock_mode:
                vision = settings.model_copy(update={"openai_model": settings.vision_model})
                vision_model = build_chat_model(vision, mock_reply_template="")
        # A model given by the caller (tests, tools) in real mode does the extraction too, unless one is.
        for each in (model, vision_model, extraction_model, summary_model):
            if each is not None:  # every call for a person's message is counted (/usage, the metric)
                count_usage_of(each, counted)
        history = HistoryStore(
            database, settings.history_turns, settings.history_tokens, folding=settings.summary_tokens > 0
        )
        await asyncio.to_thread(count_tokens, "")  # the tokenizer's table, loaded off the event loop
        summaries = Summaries(
            database,
            history,
            summary_model or model,
            prompts,
            tokens=settings.summary_tokens,
            timeout=settings.openai_timeout + 5,
            bot_name=settings.bot_name,
        )
        if memory:
            service = MemoryService(
                settings,
                prompts=prompts,
                extraction_model=extraction_model or model,
                embeddings=embeddings or build_embeddings(settings),
                database=database,
                observer=observer,
            )
            await service.open()
        reminders = ReminderBook(
            database,
            timezone=settings.timezone,
            max_per_person=settings.max_reminders_per_person,
            clock=(lambda: clock().timestamp()) if clock is not None else time.time,
        )
        toolbox = Toolbox(
            settings, reminders=reminders, reachability=reachability, mcp=mcp, observer=observer
        )
        assistant = Assistant(
            settings=settings,
            prompts=prompts,
            model=model,
            history=history,
            memory=service,
            summaries=summaries,
            usage=usage,
            clock=clock,
            observer=observer,
            # Replicas share one database: a person's limit holds across them (agent/limits.py).
            limiter=None
            if database.single_owner
            else SharedRateLimiter(database, settings.rate_limit_per_minute),
            toolbox=toolbox,
            media=MediaService(
                settings, media, FileContext(database, settings.file_context_minutes), observer=observer
            ),
            vision_model=vision_model,
        )
        yield AgentParts(database, prompts, history, service, assistant, reminders, summaries, usage)
    finally:
        if summaries is not None:
            await summaries.settle()
        if service is not None:
            await service.close()
        await usage.settle()  # last: the work settled above counts tokens too
        await database.close()
