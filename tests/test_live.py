"""Against a real endpoint, only with DINGBOT_LIVE_TESTS=1, using OPENAI_API_KEY/_API_BASE/_MODEL:

    DINGBOT_LIVE_TESTS=1 OPENAI_API_KEY=... OPENAI_API_BASE=... OPENAI_MODEL=... \
        .venv/bin/python -m pytest tests/test_live.py
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agent.settings.config import Settings
from tests.assistants import open_assistant, person_message

# Read at import: the hermetic fixture clears OPENAI_* from the environment of every test.
LIVE_ENV = {k: v for k, v in os.environ.items() if k.startswith("OPENAI_")}
pytestmark = pytest.mark.skipif(
    os.environ.get("DINGBOT_LIVE_TESTS") != "1",
    reason="live endpoint tests run only with DINGBOT_LIVE_TESTS=1",
)


def test_real_endpoint_answers_through_the_assistant(tmp_path: Path) -> None:
    fields = {k.lower(): v for k, v in LIVE_ENV.items()}
    settings = Settings(_env_file=None, database_path=tmp_path / "live.db", **fields)  # type: ignore[call-arg]

    async def go() -> tuple[str, bool]:
        async with open_assistant(settings) as assistant:
            reply = await assistant.reply(person_message("请只回答一个词：你好"))
            return reply.text, reply.failed

    text, failed = asyncio.run(go())
    assert not failed, text
    assert text.strip()
