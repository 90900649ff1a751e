"""Memory under stress: private facts and group extraction, forget racing a write, failing and slow stores."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import BaseMessage
from pydantic import Field

from agent.model.mock_memory import MockExtractionModel
from agent.settings.config import Settings
from tests.assistants import open_assistant
from tests.test_mem0_integration import WXM, FailingEmbeddings, turn
from tests.test_memory_commands import GROUP, files_containing
from tests.waiting import PATIENCE


class RecordingExtraction(MockExtractionModel):
    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.prompts.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def test_a_group_extraction_never_sees_private_facts(make_settings: Callable[..., Settings]) -> None:
    extraction = RecordingExtraction()

    async def go() -> None:
        async with open_assistant(make_settings(), memory=True, extraction_model=extraction) as assistant:
            await turn(assistant, WXM)  # private: 用户对花生过敏
            await turn(assistant, replace(GROUP, message_id="g1", text="我对花生过敏，大家点餐注意"))

    asyncio.run(go())
    group_prompt = str(extraction.prompts[-1][0].content)
    assert "  1. 用户对花生过敏" not in group_prompt  # the private copy was not offered as "already known"
    assert "（暂无）" in group_prompt


def test_forget_all_wins_over_a_write_still_being_extracted(make_settings: Callable[..., Settings]) -> None:
    extracting, forgotten = asyncio.Event(), asyncio.Event()

    class SlowExtraction(MockExtractionModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            extracting.set()
            await forgotten.wait()  # the facts come out only after /forget all has been answered
            return await super()._agenerate(*args, **kwargs)

    async def go() -> str:
        settings = make_settings(memory_timeout=2 * PATIENCE)  # the held write must not just time out
        async with open_assistant(settings, memory=True, extraction_model=SlowExtraction()) as assistant:
            reply = await assistant.reply(WXM)
            await assistant.remember(WXM, reply)  # extraction under way in the background
            await asyncio.wait_for(extracting.wait(), PATIENCE)
            await assistant.reply(replace(WXM, text="/forget all"))
            forgotten.set()
            assert assistant.memory is not None
            await assistant.memory.settle()  # the slow write finishes after the forget
            return (await assistant.reply(replace(WXM, text="/memory"))).text

    assert asyncio.run(go()).startswith("我还没有记住关于你的事")


@pytest.mark.sqlite_only  # what is left in the files on disk
def test_forget_all_erases_our_copies_even_when_memory_is_down(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async def go() -> str:
        async with open_assistant(make_settings(), memory=True, embeddings=FailingEmbeddings(0)) as assistant:
            await turn(assistant, WXM)
            assert files_containing(tmp_path / "data", ["花生"])  # the history holds the text
            return await turn(assistant, replace(WXM, text="/forget all"))

    assert asyncio.run(go()).startswith("我已删除我们的对话记录，但长期记忆暂时不可用")
    assert files_containing(tmp_path / "data", ["花生", "王小明"]) == {}


def test_a_store_error_in_a_command_still_gets_an_answer(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> list[str]:
        async with open_assistant(make_settings(), memory=True) as assistant:
            await turn(assistant, WXM)
            assert assistant.memory is not None
            store = assistant.memory._store

            def broken(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError("store went away")

            store.all_of = broken  # type: ignore[method-assign,union-attr]
            return [await turn(assistant, replace(WXM, text=t)) for t in ("/memory", "/forget 1")]

    assert asyncio.run(go()) == ["抱歉，长期记忆暂时不可用，请稍后再试。"] * 2
    assert "command /memory failed (ConnectionError)" in caplog.text


def test_forget_all_in_a_group_does_not_say_how_much_was_known(
    make_settings: Callable[..., Settings],
) -> None:
    async def go() -> str:
        async with open_assistant(make_settings(), memory=True) as assistant:
            await turn(assistant, WXM)
            return await turn(assistant, replace(GROUP, text="/忘记 全部"))

    answer = asyncio.run(go())
    assert answer == "好的，我已经忘掉关于你的一切：你的记忆和对话记录都已删除。"


def test_a_slow_store_delays_one_reply_at_most_then_is_skipped(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    store_answers, hanging = threading.Event(), threading.Event()

    class HangingEmbeddings(FailingEmbeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            if hanging.is_set():  # once the person has a memory: a store that hangs until the test is done
                store_answers.wait(2 * PATIENCE)
            return self.inner.embed_documents(texts)

    memory_timeout = 0.3

    async def go() -> list[float]:
        settings = make_settings(memory_timeout=memory_timeout)
        async with open_assistant(settings, memory=True, embeddings=HangingEmbeddings(0)) as assistant:
            assert assistant.memory is not None
            await assistant.memory.learn(WXM)  # a memory to rank: each recall embeds the message
            await assistant.memory.settle()
            hanging.set()
            try:
                took = []
                for text in ("第一问", "第二问", "第三问"):
                    started = time.perf_counter()
                    await assistant.reply(replace(WXM, text=text))
                    took.append(time.perf_counter() - started)
                return took
            finally:
                store_answers.set()

    first, _, _ = asyncio.run(go())
    # All three were answered while the store still hung: the first waited MEMORY_TIMEOUT for it, the
    # others not at all (recalls pause instead of waiting again: one timeout in all).
    assert first >= memory_timeout
    timeouts = [r for r in caplog.records if "memory search timed out after 0.3 s" in r.getMessage()]
    assert len(timeouts) == 1
    assert "recalls pause for 30 s" in caplog.text


def test_concurrent_learning_of_the_same_fact_stores_it_once(make_settings: Callable[..., Settings]) -> None:
    async def go() -> list[tuple[str, str]]:
        async with open_assistant(make_settings(), memory=True) as assistant:
            assert assistant.memory is not None
            await asyncio.gather(*(assistant.memory.learn(WXM) for _ in range(3)))
            return await assistant.memory.list_memories(WXM)

    assert [text for _, text in asyncio.run(go())] == ["用户叫王小明", "用户对花生过敏"]


def test_a_scripted_extraction_in_real_shape_is_parsed(make_settings: Callable[..., Settings]) -> None:
    extraction = FakeListChatModel(responses=['```json\n{"facts": ["用户喜欢猫"]}\n```'])

    async def go() -> list[tuple[str, str]]:
        async with open_assistant(make_settings(), memory=True, extraction_model=extraction) as assistant:
            await turn(assistant, replace(WXM, text="我喜欢猫"))
            assert assistant.memory is not None
            return await assistant.memory.list_memories(WXM)

    assert [text for _, text in asyncio.run(go())] == ["用户喜欢猫"]


def test_memory_reopens_after_close_and_recalls(make_settings: Callable[..., Settings]) -> None:
    async def go() -> list[str]:
        async with open_assistant(make_settings(), memory=True) as assistant:
            await turn(assistant, WXM)
            memory = assistant.memory
            assert memory is not None
            await memory.close()
            await memory.open()  # as after a restart: the index is preloaded from the store
            return await memory.recall(replace(WXM, conversation_id="cid-2", text="我能吃什么零食？"))

    assert "用户对花生过敏" in asyncio.run(go())
