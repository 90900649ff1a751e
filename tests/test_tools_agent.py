"""The agent loop: real tool calls from a real ChatOpenAI (a local OpenAI-compatible server speaking the
function-calling wire format, whole and streamed) and from the mock model; caps, failures, scoping."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import BaseTool, StructuredTool

from agent.assembly import AgentParts, open_agent
from agent.messages import IncomingMessage
from agent.model.mock import MockChatModel
from agent.settings.config import Settings
from tests.assistants import person_message as one_message
from tests.fakes.openai_server import FakeOpenAI, Scripted

_ids = itertools.count(1)


def person_message(text: str = "你好", **fields: Any) -> IncomingMessage:
    """A one-to-one message from 张三 with an id of its own, as every message has."""
    return one_message(text, **{"message_id": f"m{next(_ids)}", **fields})


class Recorder:
    """An AnswerStream and a ToolWatcher: what an AI card and `dingbot chat` would see."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.tools: list[tuple[str, str]] = []

    async def started(self) -> None:
        return

    async def text(self, so_far: str) -> None:
        self.texts.append(so_far)

    async def tool_started(self, name: str, args: dict[str, Any], status: str) -> None:
        self.tools.append((name, "started"))

    async def tool_finished(self, name: str, outcome: str) -> None:
        self.tools.append((name, outcome))


class FakeMcp:
    """Stands in for the MCP servers (their own tests run real ones): tools as given."""

    def __init__(self, tools: list[BaseTool], timeout: float = 1.0) -> None:
        self.tools = tools
        self.timeout = timeout

    def tools_for(self, message: IncomingMessage) -> list[BaseTool]:
        return self.tools

    def timeout_for(self, tool: str) -> float | None:
        return self.timeout if any(t.name == tool for t in self.tools) else None

    def call_failed(self, tool: str, error: BaseException) -> None:
        return


@asynccontextmanager
async def agent(settings: Settings, **extra: Any) -> AsyncIterator[AgentParts]:
    async with open_agent(settings, memory=False, **extra) as parts:
        yield parts


def test_a_real_chat_model_calls_the_reminder_tool_and_answers_with_its_result(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script.append(Scripted(tool_calls=[("set_reminder", '{"when": "PT3M", "text": "喝水"}')]))
    fake_openai.script.append(Scripted(text="好的，3分钟后提醒你喝水。"))

    async def go() -> tuple[str, list[str]]:
        async with agent(real_settings()) as parts:
            reply = await parts.assistant.reply(person_message("3分钟后提醒我喝水"))
            return reply.text, [r.text for r in await parts.reminders.active("corp:u1")]

    text, pending = asyncio.run(go())
    assert text == "好的，3分钟后提醒你喝水。"
    assert pending == ["喝水"]
    first, second = (r.json() for r in fake_openai.chats())
    assert {t["function"]["name"] for t in first["tools"]} >= {
        "set_reminder",
        "list_reminders",
        "cancel_reminder",
    }
    set_tool = next(t for t in first["tools"] if t["function"]["name"] == "set_reminder")
    assert "ISO 8601 duration" in set_tool["function"]["parameters"]["properties"]["when"]["description"]
    call_turn, result_turn = second["messages"][-2:]
    assert call_turn["role"] == "assistant"
    assert call_turn["tool_calls"][0]["function"]["name"] == "set_reminder"
    assert result_turn["role"] == "tool"
    assert result_turn["tool_call_id"] == call_turn["tool_calls"][0]["id"]
    assert "提醒你：喝水" in result_turn["content"]


def test_streamed_tool_call_deltas_are_assembled_and_the_card_shows_a_status_line(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    tomorrow_nine = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=1)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    when = tomorrow_nine.strftime("%Y-%m-%dT%H:%M")
    arguments = json.dumps({"when": when, "text": "交周报"}, ensure_ascii=False)
    fake_openai.script.append(Scripted(tool_calls=[("set_reminder", arguments)]))
    fake_openai.script.append(Scripted(text="已经设好了"))
    card = Recorder()

    async def go() -> tuple[str, list[float]]:
        async with agent(real_settings()) as parts:
            reply = await parts.assistant.reply(person_message("明天上午9点提醒我交周报"), stream=card)
            return reply.text, [r.due_at for r in await parts.reminders.active("corp:u1")]

    text, due = asyncio.run(go())
    assert text == "已经设好了"
    assert due == [tomorrow_nine.timestamp()]
    assert all(r.json()["stream"] is True for r in fake_openai.chats())
    assert "⏰ 正在设置提醒…" in card.texts  # while the tool ran
    assert card.texts[-1] == "已经设好了"


def test_tool_rounds_stop_at_agent_max_steps_and_the_model_answers_without_tools(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    for _ in range(2):
        fake_openai.script.append(Scripted(tool_calls=[("list_reminders", "{}")]))
    fake_openai.script.append(Scripted(text="你现在没有提醒。"))

    async def go() -> str:
        async with agent(real_settings(agent_max_steps=2)) as parts:
            return (await parts.assistant.reply(person_message("我有哪些提醒？"))).text

    assert asyncio.run(go()) == "你现在没有提醒。"
    chats = [r.json() for r in fake_openai.chats()]
    assert len(chats) == 3
    # the last round still declares the tools (some servers refuse tool messages without them) but may
    # not call one
    assert [c.get("tool_choice") for c in chats] == [None, None, "none"]


def test_without_tools_the_request_carries_none(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script.append(Scripted(text="只聊天"))

    async def go() -> str:
        async with agent(real_settings(agent_max_steps=0)) as parts:
            return (await parts.assistant.reply(person_message("你好"))).text

    assert asyncio.run(go()) == "只聊天"
    assert "tools" not in fake_openai.chats()[0].json()


def slow_tool(seconds: float) -> BaseTool:
    async def wait_a_while() -> str:
        await asyncio.sleep(seconds)
        return "never seen"

    return StructuredTool.from_function(coroutine=wait_a_while, name="wait_a_while", description="waits")


def broken_tool() -> BaseTool:
    async def explode() -> str:
        raise RuntimeError("the backend said no\nsecond line with details")

    return StructuredTool.from_function(coroutine=explode, name="explode", description="fails")


def test_a_failing_or_hung_or_unknown_tool_becomes_a_result_the_model_explains(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    mcp = FakeMcp([slow_tool(60), broken_tool()], timeout=0.2)

    async def go() -> list[str]:
        async with agent(make_settings(), mcp=mcp) as parts:
            said = []
            for text in ("use tool wait_a_while", "use tool explode", "use tool nonexistent"):
                said.append((await parts.assistant.reply(person_message(text))).text)
            return said

    hung, failed, unknown = asyncio.run(go())
    assert "did not answer within 0.2 seconds" in hung
    assert "RuntimeError: the backend said no" in failed
    assert "second line" not in failed
    # an unknown name is not offered to the mock (it calls only tools it was given): plain answer
    assert "模拟回复" in unknown
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.tools.toolbox"]
    assert any(line.startswith("tool wait_a_while: timeout") for line in lines)
    assert any(line.startswith("tool explode: error") for line in lines)


def test_a_model_calling_a_tool_it_was_not_given_gets_told_so(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script.append(Scripted(tool_calls=[("delete_everything", "{}")]))
    fake_openai.script.append(Scripted(text="做不到"))

    async def go() -> str:
        async with agent(real_settings()) as parts:
            return (await parts.assistant.reply(person_message("删掉一切"))).text

    assert asyncio.run(go()) == "做不到"
    result = fake_openai.chats()[1].json()["messages"][-1]
    assert result["role"] == "tool"
    assert "There is no tool named delete_everything" in result["content"]


def test_mock_mode_sets_lists_and_cancels_reminders_and_refuses_the_past(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def go() -> list[str]:
        async with agent(make_settings()) as parts:
            said = []
            for text in (
                "3分钟后提醒我喝水",
                "remind me in 20 minutes to call Li",
                "每个工作日 18:00 提醒我写日报",
                '用工具 set_reminder {"when": "2020-01-01T09:00", "text": "过去的事"}',
                "我的提醒",
            ):
                said.append((await parts.assistant.reply(person_message(text))).text)
            # The list is in due order, which depends on the time of day (18:00 may come first).
            [number] = re.findall(r"(\d+)\.[^\n]*call Li", said[-1])
            for text in (f"取消提醒 {number}", "/reminders"):
                said.append((await parts.assistant.reply(person_message(text))).text)
            return said

    water, call, daily, past, listed, cancelled, after = asyncio.run(go())
    assert "提醒你：喝水" in water
    assert "提醒你：call Li" in call
    assert "起每个工作日提醒你：写日报" in daily
    assert "已经过去了" in past
    assert listed.startswith("你有 3 条提醒")
    assert "已取消提醒" in cancelled
    assert "call Li" in cancelled
    assert after.startswith("你有 2 条提醒")
    assert "call Li" not in after
    assert not any("喝水" in r.getMessage() or "过去的事" in r.getMessage() for r in caplog.records)
    outcomes = [r.getMessage().split(" in ")[0] for r in caplog.records if r.name == "agent.tools.toolbox"]
    assert "tool set_reminder: refused" in outcomes
    assert "tool cancel_reminder: ok" in outcomes


def test_nobody_lists_or_cancels_another_persons_reminders(make_settings: Callable[..., Settings]) -> None:
    async def go() -> tuple[str, str, str, list[str]]:
        async with agent(make_settings()) as parts:
            reply = parts.assistant.reply
            await reply(person_message("明天上午9点提醒我交周报"))
            other = {
                "person_id": "corp:u2",
                "sender_staff_id": "u2",
                "sender_nick": "李四",
                "message_id": "m2",
            }
            listed = (await reply(person_message("我的提醒", **other))).text
            by_tool = (await reply(person_message("取消提醒 1", **other))).text
            by_command = (await reply(person_message("/reminders cancel 1", **other))).text
            return listed, by_tool, by_command, [r.text for r in await parts.reminders.active("corp:u1")]

    listed, by_tool, by_command, still = asyncio.run(go())
    assert "还没有设置提醒" in listed
    assert "没有找到这条提醒" in by_tool
    assert "没有第 1 条提醒" in by_command
    assert still == ["交周报"]


def test_forget_all_deletes_the_persons_reminders(make_settings: Callable[..., Settings]) -> None:
    async def go() -> list[str]:
        async with agent(make_settings()) as parts:
            await parts.assistant.reply(person_message("明天上午9点提醒我交周报"))
            await parts.assistant.reply(person_message("/forget all", message_id="m2"))
            return [r.text for r in await parts.reminders.active("corp:u1")]

    assert asyncio.run(go()) == []


def test_reminders_beyond_the_per_person_limit_are_refused(make_settings: Callable[..., Settings]) -> None:
    async def go() -> list[str]:
        async with agent(make_settings(max_reminders_per_person=2)) as parts:
            return [
                (await parts.assistant.reply(person_message(f"{n}分钟后提醒我喝水"))).text for n in (5, 6, 7)
            ]

    *accepted, refused = asyncio.run(go())
    assert all("提醒你" in a for a in accepted)
    assert "已经有 2 条" in refused


def test_the_mock_model_only_calls_tools_it_was_given() -> None:
    model = MockChatModel(reply_template="{text}")
    plain = model.invoke([SystemMessage("当前时间：2026-12-03 10:00"), HumanMessage("3分钟后提醒我喝水")])
    assert not plain.tool_calls  # type: ignore[attr-defined]
    assert plain.content == "3分钟后提醒我喝水"


def test_a_group_sees_only_the_reminders_set_in_it(make_settings: Callable[..., Settings]) -> None:
    """Like memories: what someone set privately (or in another group) is never listed in a group."""
    group = {"is_group": True, "conversation_id": "cidGroup1", "conversation_title": "研发群"}

    async def go() -> tuple[str, str, str, str]:
        async with agent(make_settings()) as parts:
            reply = parts.assistant.reply
            await reply(person_message("明天上午9点提醒我看体检报告"))  # private
            await reply(person_message("明天下午3点提醒我开周会", message_id="m2", **group))
            in_group = (await reply(person_message("/reminders", message_id="m3", **group))).text
            by_tool = (await reply(person_message("我的提醒", message_id="m4", **group))).text
            cancelled = (await reply(person_message("/reminders cancel 1", message_id="m5", **group))).text
            private = (await reply(person_message("/reminders", message_id="m6"))).text
            return in_group, by_tool, cancelled, private

    in_group, by_tool, cancelled, private = asyncio.run(go())
    assert "开周会" in in_group
    assert "体检报告" not in in_group
    assert "开周会" in by_tool
    assert "体检报告" not in by_tool
    assert "已取消提醒" in cancelled
    assert "开周会" in cancelled
    assert private.startswith("你有 1 条提醒")
    assert "体检报告" in private


def test_a_message_answered_again_sets_and_cancels_nothing_twice(
    make_settings: Callable[..., Settings],
) -> None:
    """After a crash (or a lapsed claim) a message is answered again from the inbox: its tool calls are
    named by the message, so the reminder is not set twice and a cancel does not take the next one."""

    async def go() -> tuple[list[str], list[str], list[str]]:
        async with agent(make_settings()) as parts:
            reply = parts.assistant.reply
            set_twice = [
                (await reply(person_message("10分钟后提醒我喝水", message_id="s1"))).text for _ in "ab"
            ]
            await reply(person_message("20分钟后提醒我开会"))
            await reply(person_message("30分钟后提醒我下班"))
            cancel_twice = [(await reply(person_message("取消提醒 1", message_id="c1"))).text for _ in "ab"]
            command_twice = [
                (await reply(person_message("/reminders cancel 1", message_id="c2"))).text for _ in "ab"
            ]
            left = [r.text for r in await parts.reminders.active("corp:u1")]
            return set_twice + cancel_twice + command_twice, left, []

    said, left, _ = asyncio.run(go())
    assert said[0] == said[1]  # the same confirmation, one reminder
    assert "喝水" in said[2]
    assert said[2] == said[3]
    assert "开会" in said[4]
    assert said[4] == said[5]
    assert left == ["下班"]


def test_a_model_failure_after_the_tool_acted_tells_what_the_tool_did(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    """The reminder is set, then the endpoint fails: the person hears the reminder's confirmation, not
    only an error (they would ask again, and have two)."""
    fake_openai.script.append(Scripted(tool_calls=[("set_reminder", '{"when": "PT3M", "text": "喝水"}')]))
    fake_openai.script.append(Scripted(status=500))

    async def go() -> tuple[str, bool, list[str]]:
        async with agent(real_settings()) as parts:
            reply = await parts.assistant.reply(person_message("3分钟后提醒我喝水"))
            return reply.text, reply.failed, [r.text for r in await parts.reminders.active("corp:u1")]

    text, failed, pending = asyncio.run(go())
    assert "提醒你：喝水" in text
    assert not failed
    assert pending == ["喝水"]
