"""The prompt's token budget (the window, PROMPT_TOKEN_BUDGET, cl100k_base) and /usage, through the real
assistant (SQLite and PostgreSQL, real prompts) with scripted or local OpenAI-compatible models. The
summary's own tests are in tests/test_conversation_summary.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage

from agent.assistant import Assistant
from agent.messages import IncomingMessage
from agent.model.context import CACHED_CHARS, estimate_tokens
from agent.model.scripted import RecordingChatModel
from agent.model.tokens import count_messages, count_tokens
from agent.settings.config import Settings
from tests.assistants import open_assistant, person_message
from tests.fakes.openai_server import FakeOpenAI

_SUMMARY = re.compile(r"<conversation_summary>\n(.*?)\n</conversation_summary>", re.DOTALL)
ALICE = person_message(person_id="corp:alice", sender_nick="王小丽", conversation_id="cid-alice")
GROUP = replace(
    ALICE, conversation_id="cidGroup/budget==", is_group=True, conversation_title="研发群", message_id="g"
)
BOB = replace(GROUP, person_id="corp:bob", sender_id="$:bob", sender_staff_id="bob", sender_nick="李雷")


async def talk(assistant: Assistant, message: IncomingMessage) -> str:
    """One message as the service handles it; the fold after it is done before the next message."""
    reply = await assistant.reply(message)
    await assistant.remember(message, reply)
    if assistant.summaries:
        await assistant.summaries.settle()
    return reply.text


def summary_in(prompt: list[BaseMessage] | str) -> str:
    found = _SUMMARY.search(prompt if isinstance(prompt, str) else str(prompt[0].content))
    return found.group(1) if found else ""


def test_a_200_turn_conversation_stays_within_the_budget(make_settings: Callable[..., Settings]) -> None:
    """Default HISTORY_TOKENS, PROMPT_TOKEN_BUDGET and SUMMARY_TOKENS: flat after the window fills."""
    answer = (
        "好的，我来总结一下要点：第一，先确认需求和时间；第二，拆分任务并指定负责人；第三，每天同步进度。" * 2
    )
    model = RecordingChatModel(responses=[answer] * 200)
    settings = make_settings(rate_limit_per_minute=0)

    async def go() -> int:
        async with open_assistant(settings, model) as assistant:
            for n in range(1, 201):
                said = (
                    f"第{n}个问题：项目代号 P{n:03d} 的进度怎么样？我们下周要向客户汇报，需要准备哪些材料？"
                )
                await talk(assistant, replace(ALICE, message_id=f"m{n}", text=said))
            database = assistant.history._db
            return int(await database.run(lambda c: c.execute("SELECT COUNT(*) FROM history").fetchone()[0]))

    rows = asyncio.run(go())
    tokens = [count_messages(p) for p in model.prompts]
    assert settings.prompt_token_budget == 2000
    assert max(tokens) <= 2000
    assert tokens[199] <= tokens[49] + 60  # flat once the window is full (the summary's lines vary a little)
    assert tokens[0] < tokens[49]
    last = model.prompts[199]
    assert "P199" in str(last[-3].content)  # the last turn before this one is in the window
    summary = summary_in(last)
    assert "P001" not in summary  # folded long ago and trimmed to SUMMARY_TOKENS
    assert "P1" in summary  # what left the window lately
    assert count_tokens(summary) <= settings.summary_tokens
    history = sum(count_tokens(str(m.content)) for m in last[1:-1])
    assert history <= settings.history_tokens
    assert rows <= 2 * (settings.history_turns + 1)  # what was folded is deleted, nothing piles up


def test_usage_counts_what_the_endpoint_reports(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    """Real ChatOpenAI on a local OpenAI-compatible server: its `usage` fields, streamed answers too."""
    fake_openai.usage = (1200, 34)

    class Watch:
        async def started(self) -> None:
            return None

        async def text(self, so_far: str) -> None:
            return None

    async def go() -> tuple[str, str, bool]:
        async with open_assistant(real_settings()) as assistant:
            await talk(assistant, replace(ALICE, message_id="u1", text="你好"))
            first = await talk(assistant, replace(ALICE, message_id="u2", text="/usage"))
            message = replace(ALICE, message_id="u3", text="讲个故事")
            reply = await assistant.reply(message, stream=Watch())
            await assistant.remember(message, reply)
            second = await talk(assistant, replace(ALICE, message_id="u4", text="/用量"))
            other = await talk(
                assistant, replace(ALICE, person_id="corp:other", message_id="o", text="/usage")
            )
        streamed = [r for r in fake_openai.chats() if r.json().get("stream")]
        asked = bool(streamed) and streamed[0].json().get("stream_options") == {"include_usage": True}
        return first, second + "\n" + other, asked

    first, second, asked = asyncio.run(go())
    assert first == (
        "你今天用了 1,234 个 token（提示 1,200，回答 34）；\n本月用了 1,234 个 token（提示 1,200，回答 34）。"
    )
    assert asked  # the streamed answer asked for its usage
    assert second.startswith("你今天用了 2,468 个 token（提示 2,400，回答 68）；")
    assert second.endswith(
        "你今天用了 0 个 token（提示 0，回答 0）；\n本月用了 0 个 token（提示 0，回答 0）。"
    )


def test_tokens_are_counted_and_clipped_with_cl100k_base() -> None:
    from agent.model.tokens import clip_tokens, tokenizer_name

    assert tokenizer_name() == "cl100k_base"  # the bundled file: no download, no estimate
    assert count_tokens("Hello world") == 2
    long = "项目周报：本周完成了支付系统的压测，" * 50
    clipped = clip_tokens(long, 40)
    assert count_tokens(clipped) <= 40
    assert long.startswith(clipped)
    assert clip_tokens("短", 40) == "短"


def test_the_newest_turn_stays_in_the_window_however_long(make_settings: Callable[..., Settings]) -> None:
    long_answer = "这是很长的一段回答，包含许多细节和步骤。" * 35  # ≈ 900 tokens, past HISTORY_TOKENS
    model = RecordingChatModel(responses=[long_answer, "好的"])

    async def go() -> None:
        async with open_assistant(make_settings(history_tokens=300), model) as assistant:
            await talk(assistant, replace(ALICE, message_id="l1", text="详细说说"))
            await talk(assistant, replace(ALICE, message_id="l2", text="把第三点缩短"))

    asyncio.run(go())
    assert count_tokens(long_answer) > 300
    assert str(model.prompts[1][-2].content) == long_answer  # "shorten point 3" sees the answer it means


def test_no_history_turns_keeps_nothing(make_settings: Callable[..., Settings]) -> None:
    model = RecordingChatModel(responses=["好"] * 5)

    async def go() -> int:
        async with open_assistant(make_settings(history_turns=0), model) as assistant:
            for n in range(3):
                await talk(assistant, replace(ALICE, message_id=f"z{n}", text=f"第{n}句"))
            database = assistant.history._db
            return int(await database.run(lambda c: c.execute("SELECT COUNT(*) FROM history").fetchone()[0]))

    assert asyncio.run(go()) == 0


def test_usage_in_a_group_is_told_privately(make_settings: Callable[..., Settings]) -> None:
    async def go() -> str:
        async with open_assistant(make_settings(), RecordingChatModel(responses=["x"])) as assistant:
            return await talk(assistant, replace(GROUP, message_id="gu", text="/usage"))

    assert asyncio.run(go()) == "用量只在私聊里告诉你本人：请私聊我发送 /usage。"


def test_the_usage_callback_forgets_calls_that_never_ended() -> None:
    from uuid import uuid4

    from agent.model.usage import MAX_RUNS, UsageBook, UsageCallback

    callback = UsageCallback(UsageBook(None, None))  # type: ignore[arg-type]  # nothing is recorded here
    for _ in range(MAX_RUNS + 50):  # calls cancelled mid-way: no end, no error
        callback.on_chat_model_start({}, [[AIMessage(content="x")]], run_id=uuid4())
    assert len(callback._started) == MAX_RUNS


def test_azure_asks_for_streamed_usage_only_where_its_api_version_takes_it(
    make_settings: Callable[..., Settings],
) -> None:
    from agent.model.factory import build_chat_model

    azure = {
        "force_mock_openai": False,
        "openai_api_key": "k",
        "openai_api_base": "https://res.openai.azure.com/",
    }
    new = build_chat_model(make_settings(**azure, openai_api_version="2024-10-21"), mock_reply_template="")
    old = build_chat_model(make_settings(**azure, openai_api_version="2024-02-01"), mock_reply_template="")
    assert getattr(new, "stream_usage", None) is True
    assert getattr(old, "stream_usage", None) is False


def test_usage_counts_gather_and_reach_the_table_in_one_write(database_target: object) -> None:
    """200 calls counted within a second reach the table in one write (not one each), and every token
    counts; left alone, the counts are written by themselves, without anyone reading them."""
    from datetime import UTC

    from agent.model.usage import UsageBook
    from agent.storage.database import Database
    from tests.waiting import PATIENCE

    async def scenario() -> tuple[int, int, int, list[Any]]:
        database = Database(database_target)  # type: ignore[arg-type]
        await database.open()
        writes = 0
        run = database.run

        async def counted(work: Callable[..., object]) -> object:
            nonlocal writes
            writes += 1
            return await run(work)

        database.run = counted  # type: ignore[method-assign]
        book = UsageBook(database, UTC)
        for n in range(200):
            book.record("corp:alice" if n % 2 else "corp:bob", "gpt-4-turbo", 10, 1)
            await asyncio.sleep(0)  # the writer runs between calls, as in the service
        alice, _ = await book.of("corp:alice")  # writes what waits, then reads
        counted_writes = writes
        book.record("corp:carol", "gpt-4-turbo", 7, 2)  # nobody reads this one: written by itself
        deadline = asyncio.get_running_loop().time() + PATIENCE
        rows: list[Any] = []
        while not rows and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            rows = await run(
                lambda c: c.execute(
                    "SELECT prompt_tokens, completion_tokens FROM token_usage WHERE person_id = ?",
                    ("corp:carol",),
                ).fetchall()
            )
        await database.close()
        return counted_writes, alice.prompt, alice.completion, [tuple(r) for r in rows]

    writes, prompt, completion, carol = asyncio.run(scenario())
    assert (prompt, completion) == (100 * 10, 100 * 1)
    assert writes == 2  # one write of the 200 counts, one read
    assert carol == [(7, 2)]


def test_counts_waiting_to_be_written_are_dropped_for_a_person_forgotten_meanwhile(
    database_target: object,
) -> None:
    """/forget all erases a person's token_usage rows; counts of theirs still waiting must not bring a row
    back (another person's are written as usual)."""
    import time
    from datetime import UTC

    from agent.model.usage import UsageBook
    from agent.storage.database import Database
    from agent.storage.records import mark_forgotten

    async def scenario() -> list[Any]:
        database = Database(database_target)  # type: ignore[arg-type]
        await database.open()
        book = UsageBook(database, UTC)
        book.record("corp:alice", "gpt-4-turbo", 10, 1)
        book.record("corp:bob", "gpt-4-turbo", 20, 2)
        await database.run(lambda c: mark_forgotten(c, "corp:alice", time.time()))
        await book.settle()
        rows = await database.run(
            lambda c: c.execute("SELECT person_id, prompt_tokens FROM token_usage ORDER BY 1").fetchall()
        )
        await database.close()
        return [tuple(r) for r in rows]

    assert asyncio.run(scenario()) == [("corp:bob", 20)]


def _estimate_char_by_char(text: str) -> int:
    """The context estimate's definition, one character at a time: CJK 1.5, Latin letters and digits 1/3,
    anything else but spaces and newlines 0.6, plus one."""
    cjk = sum(
        1
        for ch in text
        if "\u2e80" <= ch <= "\u9fff"
        or "\uac00" <= ch <= "\ud7af"
        or "\uf900" <= ch <= "\ufaff"
        or "\uff00" <= ch <= "\uffef"
    )
    latin = sum(1 for ch in text if ch.isascii() and ch.isalnum())
    other = len(text) - cjk - latin - text.count(" ") - text.count("\n")
    return int(cjk * 1.5 + latin / 3 + max(other, 0) * 0.6) + 1


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("你好，世界。한국어ｱｲＡ１abcXYZ019 \n\t-_!?😀é")) | st.characters(),
        max_size=300,
    )
)
def test_the_context_estimate_counts_every_character_by_its_kind(text: str) -> None:
    expected = _estimate_char_by_char(text)
    assert estimate_tokens(text) == expected
    assert estimate_tokens(text) == expected  # remembered: the same again
    long = text * (CACHED_CHARS // max(len(text), 1) + 1)  # past what is remembered
    assert estimate_tokens(long) == _estimate_char_by_char(long)
