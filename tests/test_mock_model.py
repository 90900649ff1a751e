"""Mock mode: deterministic Chinese replies that show what the model was given, streamed too."""

from __future__ import annotations

import asyncio

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agent.model.mock import MockChatModel
from agent.prompts.loader import load_prompts
from agent.settings.config import DEFAULT_PROMPTS_DIR

TEMPLATE = load_prompts(DEFAULT_PROMPTS_DIR).reply_template("mock_reply")


def conversation() -> list:  # type: ignore[type-arg]
    return [
        SystemMessage("规则\n<memories>\n- 喜欢喝茶\n- 对花生过敏\n</memories>\n"),
        HumanMessage("早"),
        AIMessage("早上好"),
        HumanMessage("午饭吃什么？"),
        AIMessage("面条"),
        HumanMessage("推荐个零食"),
    ]


def test_reply_shows_words_turns_and_memories() -> None:
    text = MockChatModel(reply_template=TEMPLATE).invoke(conversation()).content
    assert text == (
        "【模拟回复】当前为 Mock 模式，没有调用真实的大模型。\n"
        "你说的是：「推荐个零食」\n"
        "模型收到了 2 轮历史对话和 2 条记忆。"
    )


def test_reply_is_deterministic_and_streams_the_same_text() -> None:
    model = MockChatModel(reply_template=TEMPLATE)
    whole = model.invoke(conversation()).content

    async def stream() -> list[str]:
        return [str(c.content) async for c in model.astream(conversation())]

    chunks = asyncio.run(stream())
    assert len(chunks) > 3
    assert "".join(chunks) == whole == model.invoke(conversation()).content


def test_no_memory_block_means_zero_memories() -> None:
    text = str(MockChatModel(reply_template=TEMPLATE).invoke([HumanMessage("hi")]).content)
    assert "「hi」" in text
    assert "0 轮历史对话和 0 条记忆" in text
