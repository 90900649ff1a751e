"""The exact messages the model receives, over several turns, as readable snapshot files."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from agent.messages import IncomingMessage
from agent.settings.config import Settings
from tests.assistants import open_assistant, person_message
from tests.fakes.models import RecordingChatModel, render
from tests.snapshot import assert_snapshot

NOW = datetime(2026, 11, 23, 18, 5, tzinfo=ZoneInfo("Asia/Shanghai"))  # a Monday

ALICE = person_message(
    "",
    conversation_id="cidDirectAlice==",
    person_id="corp:alice",
    sender_id="$:alice",
    sender_staff_id="alice",
    sender_nick="王小丽",
)


async def converse(settings: Settings, model: RecordingChatModel, turns: list[IncomingMessage]) -> list[str]:
    async with open_assistant(settings, model, clock=lambda: NOW) as assistant:
        answers = []
        for message in turns:
            reply = await assistant.reply(message)
            await assistant.remember(message, reply)
            if assistant.summaries:  # what left the window is folded before the next message
                await assistant.summaries.settle()
            answers.append(reply.text)
        return answers


def say(base: IncomingMessage, text: str, **changes: object) -> IncomingMessage:
    return replace(base, text=text, **changes)  # type: ignore[arg-type]


def test_direct_conversation_over_three_turns(make_settings: Callable[..., Settings]) -> None:
    model = RecordingChatModel(responses=["你好，王小丽！", "明天上午十点。", "好的，已记下。"])
    answers = asyncio.run(
        converse(
            make_settings(),
            model,
            [say(ALICE, "你好"), say(ALICE, "周会是什么时候？"), say(ALICE, "帮我记一下：带电脑")],
        )
    )
    assert answers == ["你好，王小丽！", "明天上午十点。", "好的，已记下。"]
    assert len(model.prompts) == 3
    assert_snapshot("direct_turn1", render(model.prompts[0]))
    assert_snapshot("direct_turn3", render(model.prompts[2]))


def test_history_keeps_only_the_last_turns(make_settings: Callable[..., Settings]) -> None:
    model = RecordingChatModel(responses=[f"答{i}" for i in range(1, 6)])
    asyncio.run(converse(make_settings(history_turns=2), model, [say(ALICE, f"问{i}") for i in range(1, 6)]))
    assert_snapshot("history_limit_turn5", render(model.prompts[4]))


def test_group_history_is_per_speaker_by_default(make_settings: Callable[..., Settings]) -> None:
    group = replace(ALICE, conversation_id="cidGroup/abc==", is_group=True, conversation_title="研发群")
    bob = replace(group, person_id="corp:bob", sender_id="$:bob", sender_staff_id="bob", sender_nick="李雷")
    model = RecordingChatModel(responses=["收到", "好的", "明白"])
    asyncio.run(
        converse(make_settings(), model, [say(group, "A 的问题"), say(bob, "B 的问题"), say(group, "A 追问")])
    )
    assert_snapshot("group_per_speaker_turn2", render(model.prompts[1]))
    assert_snapshot("group_per_speaker_turn3", render(model.prompts[2]))


def test_group_shared_context_mixes_speakers_with_names(make_settings: Callable[..., Settings]) -> None:
    group = replace(ALICE, conversation_id="cidGroup/abc==", is_group=True, conversation_title="研发群")
    bob = replace(group, person_id="corp:bob", sender_id="$:bob", sender_staff_id="bob", sender_nick="李雷")
    model = RecordingChatModel(responses=["收到", "好的"])
    asyncio.run(
        converse(
            make_settings(group_shared_context=True), model, [say(group, "A 的问题"), say(bob, "B 的问题")]
        )
    )
    assert_snapshot("group_shared_turn2", render(model.prompts[1]))


def test_failed_answers_are_not_kept_in_history(make_settings: Callable[..., Settings]) -> None:
    class Exploding(RecordingChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
            self.prompts.append(list(messages))
            if len(self.prompts) == 1:
                raise RuntimeError("model fell over")
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    model = Exploding(responses=["第二次成功"])
    answers = asyncio.run(converse(make_settings(), model, [say(ALICE, "第一问"), say(ALICE, "第二问")]))
    assert answers[0] == "抱歉，处理你的消息时出了点问题，请稍后再试。"
    assert answers[1] == "第二次成功"
    assert [m.type for m in model.prompts[1]] == ["system", "human"]
