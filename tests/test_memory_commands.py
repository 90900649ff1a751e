"""Commands: /help /reset /memory /memory share /forget N /forget all — with real mem0 and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.commands import parse_command
from agent.memory.history import Turn
from agent.settings.config import Settings
from tests.assistants import open_assistant, person_message
from tests.test_mem0_integration import SNACK, WXM, turn

GROUP = replace(WXM, conversation_id="cidGroup/x+1==", is_group=True, conversation_title="研发群")


@pytest.mark.parametrize(
    ("text", "name", "args"),
    [
        ("/help", "help", ()),
        ("/帮助", "help", ()),
        ("／记忆", "memory", ()),
        ("/memory share on", "memory", ("share", "on")),
        ("/记忆 共享 开", "memory", ("共享", "开")),
        ("/forget 2", "forget", ("2",)),
        ("/忘记全部", "forget", ("全部",)),
        ("/FORGET ALL", "forget", ("all",)),
        ("/bogus", "unknown", ()),
    ],
)
def test_parse(text: str, name: str, args: tuple[str, ...]) -> None:
    command = parse_command(text)
    assert command is not None
    assert (command.name, command.args) == (name, args)


@pytest.mark.parametrize("text", ["你好", "1/2 是多少", "http://x/y"])
def test_ordinary_messages_are_not_commands(text: str) -> None:
    assert parse_command(text) is None


def test_help_reset_and_unknown(make_settings: Callable[..., Settings]) -> None:
    async def go() -> list[str]:
        async with open_assistant(make_settings(), memory=True) as assistant:
            answers = [await turn(assistant, replace(WXM, text="/help"))]
            await turn(assistant, replace(WXM, text="第一句"))
            answers.append(await turn(assistant, replace(WXM, text="第二句")))
            answers.append(await turn(assistant, replace(WXM, text="/重置")))
            answers.append(await turn(assistant, replace(WXM, text="第三句")))
            answers.append(await turn(assistant, replace(WXM, text="/whatever")))
            return answers

    help_text, second, reset, third, unknown = asyncio.run(go())
    assert "/forget all（/忘记 全部）" in help_text
    assert "1 轮历史对话" in second  # commands are not kept in history
    assert reset.startswith("好的，我已清空")
    assert "0 轮历史对话" in third
    assert "不认识这个命令" in unknown


def test_memory_list_share_and_forget_one(make_settings: Callable[..., Settings]) -> None:
    async def go() -> dict[str, str]:
        out: dict[str, str] = {}
        async with open_assistant(make_settings(), memory=True) as assistant:
            await turn(assistant, WXM)  # 我叫王小明，我对花生过敏 (one-to-one)
            await turn(assistant, replace(GROUP, message_id="g1", text="我负责后端"))
            out["direct"] = await turn(assistant, replace(WXM, text="/memory"))
            out["group"] = await turn(assistant, replace(GROUP, text="/记忆"))
            out["share"] = await turn(assistant, replace(GROUP, text="/memory share on"))
            out["group shared"] = await turn(assistant, replace(GROUP, text="/memory"))
            out["forget"] = await turn(assistant, replace(WXM, text="/forget 2"))
            out["bad"] = await turn(assistant, replace(WXM, text="/forget 9"))
            out["after"] = await turn(assistant, replace(WXM, text="/memory"))
        return out

    out = asyncio.run(go())
    assert out["direct"].splitlines()[:4] == [
        "我记得关于你的 3 件事：",
        "1. 用户叫王小明",
        "2. 用户对花生过敏",
        "3. 用户负责后端",
    ]
    assert "花生" not in out["group"]  # private facts stay private in a group
    assert "1. 用户负责后端" in out["group"]
    assert out["share"].startswith("好的，在群聊里我也可以参考")
    assert "用户对花生过敏" in out["group shared"]
    assert out["forget"] == "好的，我已经忘掉了：用户对花生过敏"
    assert out["bad"] == "没有第 9 条记忆。用 /memory 查看编号（目前共 2 条）。"
    assert "花生" not in out["after"]


def files_containing(folder: Path, needles: list[str]) -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found = [n for n in needles if n.encode() in data]
            if found:
                hits[str(path.relative_to(folder))] = found
    return hits


def test_forget_all_leaves_no_copy_in_any_file(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    secrets = ["王小明", "花生", "只在群里说的秘密爱好是集邮"]

    async def go() -> tuple[str, str, dict[str, list[str]]]:
        async with open_assistant(settings, memory=True) as assistant:
            await turn(assistant, WXM)
            await turn(assistant, replace(GROUP, message_id="g1", text="我只在群里说的秘密爱好是集邮"))
            await turn(assistant, replace(WXM, text="花生能吃吗？"))
            before = files_containing(tmp_path / "data", secrets)
            assert before, "the scenario stored nothing: the check below would prove nothing"
            done = await turn(assistant, replace(WXM, text="/forget all"))
            after_prompt = await turn(assistant, replace(WXM, conversation_id="cid-new", text=SNACK))
        return done, after_prompt, files_containing(tmp_path / "data", secrets)

    done, after_prompt, hits = asyncio.run(go())
    assert done == "好的，我已经忘掉关于你的一切：3 条记忆和我们的对话记录都已删除。"
    assert "0 条记忆" in after_prompt
    assert hits == {}


def test_other_people_keep_their_memories_after_someone_forgets(
    make_settings: Callable[..., Settings],
) -> None:
    lilei = person_message("我叫李雷，我喜欢篮球", person_id="corp:lilei", conversation_id="cid-lilei")

    async def go() -> str:
        async with open_assistant(make_settings(), memory=True) as assistant:
            await turn(assistant, WXM)
            await turn(assistant, lilei)
            await turn(assistant, replace(WXM, text="/forget all"))
            return await turn(assistant, replace(lilei, text="/memory"))

    assert "用户喜欢篮球" in asyncio.run(go())


@pytest.mark.parametrize("place", ["help_direct", "help_group"])
def test_help_lists_every_command_there_is(place: str) -> None:
    """A command added to the parser and left out of /help fails here, for one-to-one and group alike."""
    from agent.commands import _NAMES
    from agent.prompts.loader import load_prompts
    from agent.settings.config import DEFAULT_PROMPTS_DIR

    text = load_prompts(DEFAULT_PROMPTS_DIR).command_reply(place, bot_name="小钉")
    for command in sorted(set(_NAMES.values())):
        assert f"/{command}" in text, command
    for usage in (
        "/memory share on|off",
        "/forget N",
        "/forget all",
        "/记忆 共享 开|关",
        "/忘记 全部",
        "/帮助",
    ):
        assert usage in text, usage


def test_memory_in_a_group_where_nothing_may_be_used_says_why(make_settings: Callable[..., Settings]) -> None:
    """The person has private memories, none usable here: not "I remember nothing about you"."""

    async def go() -> tuple[str, str]:
        async with open_assistant(make_settings(), memory=True) as assistant:
            await turn(assistant, WXM)  # 我叫王小明，我对花生过敏 (one-to-one)
            return await turn(assistant, replace(GROUP, text="/memory")), await turn(
                assistant, replace(WXM, message_id="w2", text="/memory")
            )

    group, direct = asyncio.run(go())
    assert group.startswith("在这个群里我还没有能用到的关于你的记忆")
    assert "/memory share on" in group
    assert direct.startswith("我记得关于你的 2 件事")


def test_a_message_answered_before_a_crash_is_learned_from_at_the_next_start(
    make_settings: Callable[..., Settings], fake_dingtalk: Any
) -> None:
    """The learning job stored with the reply outlives the process: the next start learns from it; and
    "/forget all" takes such a job with it."""
    from agent.messages import message_to_json
    from agent.storage.database import Database
    from agent.storage.records import store_learning
    from tests.conftest import SECRET, serve
    from tests.fakes.payloads import callback, encode, signed_headers
    from tests.store import sql
    from tests.waiting import wait_until

    settings = make_settings()
    other = replace(WXM, message_id="other==", person_id="corp:someone-else")

    async def crash_after_the_reply() -> None:  # what it leaves: the learning jobs, not learned yet
        database = Database.for_settings(settings)
        await database.open()
        for message in (WXM, other):
            await database.run(
                lambda c, m=message: store_learning(c, m.message_id, m.person_id, message_to_json(m))
            )
        await database.close()

    asyncio.run(crash_after_the_reply())
    corp, staff_id = WXM.person_id.split(":")
    body = callback(fake_dingtalk.webhook(), "/memory", senderStaffId=staff_id, senderCorpId=corp)
    with serve(settings) as app:
        wait_until(lambda: app.client.get("/healthz").json()["memory_writes"] == 0, what="memory writes")
        app.post_callback(encode(body), signed_headers(SECRET))
        [reply] = fake_dingtalk.wait_for(1, path="/robot/sendBySession")
    assert "用户对花生过敏" in reply.json()["text"]["content"]
    assert sql(settings, "SELECT msg_id FROM learning") == []


def test_forget_all_takes_the_persons_pending_learning_with_it_and_refuses_older_turns(
    tmp_path: Path,
) -> None:
    from agent.memory.history import HistoryStore
    from agent.messages import message_to_json
    from agent.storage.database import Database
    from agent.storage.records import store_learning

    async def go() -> tuple[list[Any], bool, bool]:
        database = Database(tmp_path / "db.sqlite")
        await database.open()
        try:
            await database.run(lambda c: store_learning(c, "m1", WXM.person_id, message_to_json(WXM)))
            history = HistoryStore(database, 10)
            await history.erase_person(WXM.person_id, asked_at=1000.0)
            jobs = await database.run(lambda c: c.execute("SELECT msg_id FROM learning").fetchall())
            before = await history.append("s", Turn("早说的", "好"), WXM.person_id, said_at=999.0)
            after = await history.append("s", Turn("后说的", "好"), WXM.person_id, said_at=1001.0)
            return jobs, before, after
        finally:
            await database.close()

    jobs, before, after = asyncio.run(go())
    assert jobs == []
    assert before is False  # said before the forget: never written
    assert after is True


def test_a_message_is_embedded_once_for_its_recall_and_its_learning(
    real_settings: Callable[..., Settings], fake_openai: Any, fake_dingtalk: Any
) -> None:
    """The recall and the learning's related facts both ask about the message's own words: the endpoint is
    asked for that embedding once (an embeddings request, and in mock mode a third of the CPU per message),
    and not at all while the person has no memory to rank."""
    from tests.conftest import SECRET, serve
    from tests.fakes.openai_server import Scripted
    from tests.fakes.payloads import callback, encode, signed_headers
    from tests.waiting import wait_until

    settings = real_settings()
    first, second = "我住在北京，每天骑车上班", "我周末喜欢去香山爬山"
    fake_openai.script.extend(
        [Scripted(text="好的"), Scripted(text='{"facts": ["用户住在北京"]}'), Scripted(text="好的")]
    )
    with serve(settings) as app:

        def embedded() -> list[Any]:
            return [r.json()["input"] for r in fake_openai.requests if r.path.endswith("/embeddings")]

        def settled() -> bool:
            return app.client.get("/healthz").json()["memory_writes"] == 0

        assert (
            app.post_callback(
                encode(callback(fake_dingtalk.webhook(), first)), signed_headers(SECRET)
            ).status_code
            == 200
        )
        wait_until(lambda: ["我住在北京"] in embedded() and settled(), what="the fact stored")
        assert (
            app.post_callback(
                encode(callback(fake_dingtalk.webhook(), second)), signed_headers(SECRET)
            ).status_code
            == 200
        )
        fake_dingtalk.wait_for(2)
        wait_until(settled, what="memory writes")
    inputs = embedded()
    assert not [i for i in inputs if i in ([first], first)], inputs  # no memories yet: nothing to rank
    assert len([i for i in inputs if i in ([second], second)]) == 1, inputs
