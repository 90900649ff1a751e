"""Against a real endpoint, only with DINGBOT_LIVE_TESTS=1, using OPENAI_API_KEY/_API_BASE/_MODEL:

    DINGBOT_LIVE_TESTS=1 OPENAI_API_KEY=... OPENAI_API_BASE=... OPENAI_MODEL=... \
        .venv/bin/python -m pytest tests/test_live.py
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agent.assistant import Assistant
from agent.config import Settings
from agent.database import Database
from agent.history import HistoryStore
from agent.llm import build_chat_model
from agent.messages import IncomingMessage
from agent.prompts import load_prompts

# Read at import: the hermetic fixture clears OPENAI_* from the environment of every test.
LIVE_ENV = {k: v for k, v in os.environ.items() if k.startswith("OPENAI_")}
pytestmark = pytest.mark.skipif(
    os.environ.get("DINGBOT_LIVE_TESTS") != "1",
    reason="live endpoint tests run only with DINGBOT_LIVE_TESTS=1",
)


def test_real_endpoint_answers_through_the_assistant(tmp_path: Path) -> None:
    fields = {k.lower(): v for k, v in LIVE_ENV.items()}
    settings = Settings(_env_file=None, database_path=tmp_path / "live.db", **fields)  # type: ignore[call-arg]
    message = IncomingMessage(
        message_id="live-1",
        conversation_id="cid-live",
        is_group=False,
        person_id="live:tester",
        sender_id="live",
        sender_staff_id="tester",
        sender_nick="测试员",
        text="请只回答一个词：你好",
    )

    async def go() -> tuple[str, bool]:
        db = Database(settings.database_path)
        await db.open()
        try:
            prompts = load_prompts(settings.prompts_dir)
            model = build_chat_model(settings, mock_reply_template=prompts.reply_template("mock_reply"))
            reply = await Assistant(
                settings=settings, prompts=prompts, model=model, history=HistoryStore(db, 10)
            ).reply(message)
            return reply.text, reply.failed
        finally:
            await db.close()

    text, failed = asyncio.run(go())
    assert not failed, text
    assert text.strip()
