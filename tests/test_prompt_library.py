"""Prompt hot reload and per-group overrides: in the library, and in the running service."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.errors import PromptError
from agent.prompts.library import PromptLibrary
from agent.settings.config import DEFAULT_PROMPTS_DIR, Settings
from tests.conftest import SECRET, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk

GROUP_ID = "cidGroupAbc/x+1=="  # the group conversation of tests/fakes/payloads.py: base64 with / and +
OTHER_GROUP_ID = "cidOther9/Zz=="


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts"
    shutil.copytree(DEFAULT_PROMPTS_DIR, folder, ignore=shutil.ignore_patterns("tests"))
    return folder


def edit(path: Path, old: str, new: str) -> None:
    """Change a file the way an editor does, and make sure its modification time moves."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    before = path.stat().st_mtime_ns
    path.write_text(text.replace(old, new), encoding="utf-8")
    if path.stat().st_mtime_ns == before:  # same clock tick: move it on, as the next edit would
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def system_text(library: PromptLibrary, conversation_id: str = "cidDirect==") -> str:
    template = library.for_conversation(conversation_id).chat.messages[0]
    return str(template.prompt.template)  # type: ignore[union-attr]


def write_group(folder: Path, name: str, body: str) -> Path:
    (folder / "groups").mkdir(exist_ok=True)
    path = folder / "groups" / name
    path.write_text(body, encoding="utf-8")
    return path


def test_an_edited_file_is_used_from_the_next_lookup(prompts: Path) -> None:
    library = PromptLibrary(prompts)
    assert "一位在钉钉里为团队服务的 AI 助手" in system_text(library)
    edit(prompts / "system.md", "一位在钉钉里为团队服务的 AI 助手", "一位专门回答报销问题的助手")
    assert "一位专门回答报销问题的助手" in system_text(library)
    assert library.version == 2
    assert library.refresh() is False  # nothing changed since: no reload


def test_a_broken_edit_keeps_the_last_good_prompts_and_says_why(
    prompts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    library = PromptLibrary(prompts)
    edit(prompts / "system.md", "当前时间：{now}", "当前时间：{now} {wether}")
    with caplog.at_level(logging.WARNING, logger="agent.prompts.library"):
        text = system_text(library)
    assert "{wether}" not in text  # the last good version
    assert "当前时间：{now}" in text
    [problem] = library.problems
    assert "system.md" in problem
    assert "wether" in problem
    assert any("wether" in r.getMessage() and "last good" in r.getMessage() for r in caplog.records)
    edit(prompts / "system.md", "{now} {wether}", "{now}（已修好）")
    assert "（已修好）" in system_text(library)
    assert library.problems == []


def test_broken_yaml_in_replies_keeps_the_last_good_replies(prompts: Path) -> None:
    library = PromptLibrary(prompts)
    edit(prompts / "replies.yaml", "markdown_title: 回复", "markdown_title: [回复")
    assert library.defaults.reply("markdown_title") == "回复"
    assert "replies.yaml" in library.problems[0]
    assert "YAML" in library.problems[0]


def test_a_group_file_overrides_the_defaults_for_the_conversations_it_names(prompts: Path) -> None:
    write_group(
        prompts,
        "engineering.yaml",
        f"""
conversations: ["{GROUP_ID}"]
system_extra: |
  这个群是研发群：回答时优先给出命令和代码。
chat_place:
  group: 研发群「{{conversation_title}}」
replies:
  empty: 研发群里直接 @{{bot_name}} 并贴出报错就好。
""",
    )
    library = PromptLibrary(prompts)
    group = library.for_conversation(GROUP_ID)
    assert "优先给出命令和代码" in str(group.chat.messages[0].prompt.template)  # type: ignore[union-attr]
    assert group.render_chat_place(is_group=True, conversation_title="后端") == "研发群「后端」"
    assert group.reply("empty", bot_name="小钉") == "研发群里直接 @小钉 并贴出报错就好。"
    assert group.reply("markdown_title") == "回复"  # what the group file leaves alone stays the default
    other = library.for_conversation(OTHER_GROUP_ID)
    assert "优先给出命令和代码" not in str(other.chat.messages[0].prompt.template)  # type: ignore[union-attr]
    assert other.reply("empty", bot_name="小钉").startswith("你好，我是小钉")
    assert library.group_files() == {"groups/engineering.yaml": (GROUP_ID,)}


def test_a_group_can_have_a_system_prompt_of_its_own(prompts: Path) -> None:
    (prompts / "groups").mkdir(exist_ok=True)
    (prompts / "groups" / "sales.md").write_text("你是销售群的助手{bot_name}。{memories}", encoding="utf-8")
    write_group(prompts, "sales.yaml", f"conversations: ['{OTHER_GROUP_ID}']\nsystem_file: sales.md\n")
    library = PromptLibrary(prompts)
    assert system_text(library, OTHER_GROUP_ID) == "你是销售群的助手{bot_name}。{memories}"
    edit(prompts / "groups" / "sales.md", "销售群", "大客户销售群")  # the group's own file reloads too
    assert system_text(library, OTHER_GROUP_ID).startswith("你是大客户销售群的助手")


def test_a_group_file_added_while_running_applies_and_a_removed_one_stops(prompts: Path) -> None:
    library = PromptLibrary(prompts)
    assert library.for_conversation(GROUP_ID) is library.defaults
    path = write_group(prompts, "eng.yaml", f"conversations: ['{GROUP_ID}']\nsystem_extra: 研发群\n")
    assert library.for_conversation(GROUP_ID) is not library.defaults
    path.unlink()
    assert library.for_conversation(GROUP_ID) is library.defaults


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("system_extra: 没有 conversations\n", "conversations must list"),
        (f"conversations: ['{GROUP_ID}']\nsystem_extrа: 拼错的键\n", "unknown key"),
        (f"conversations: ['{GROUP_ID}']\nsystem_extra: 用 {{unknown_var}}\n", "unknown_var"),
        (f"conversations: ['{GROUP_ID}']\nsystem_file: missing.md\n", "file not found"),
        (f"conversations: ['{GROUP_ID}']\nreplies: 不是映射\n", "replies must be a mapping"),
    ],
)
def test_an_invalid_group_file_stops_startup_naming_the_file(prompts: Path, body: str, reason: str) -> None:
    write_group(prompts, "bad.yaml", body)
    with pytest.raises(PromptError, match=r"bad\.yaml") as raised:
        PromptLibrary(prompts)
    assert reason in str(raised.value)


def test_two_group_files_may_not_claim_one_conversation(prompts: Path) -> None:
    write_group(prompts, "a.yaml", f"conversations: ['{GROUP_ID}']\nsystem_extra: A\n")
    library = PromptLibrary(prompts)
    write_group(prompts, "b.yaml", f"conversations: ['{GROUP_ID}', '{OTHER_GROUP_ID}']\nsystem_extra: B\n")
    assert "A" in system_text(library, GROUP_ID).splitlines()[-1]  # a.yaml keeps it
    assert library.for_conversation(OTHER_GROUP_ID) is library.defaults  # b.yaml is not used at all
    assert "b.yaml" in library.problems[0]
    assert "also in a.yaml" in library.problems[0]
    with pytest.raises(PromptError, match=r"also in a\.yaml"):
        PromptLibrary(prompts)


def test_a_group_file_broken_while_running_keeps_its_last_good_version(prompts: Path) -> None:
    path = write_group(prompts, "eng.yaml", f"conversations: ['{GROUP_ID}']\nsystem_extra: 研发群规则一\n")
    library = PromptLibrary(prompts)
    edit(path, "研发群规则一", "研发群规则{二")
    assert system_text(library, GROUP_ID).rstrip().endswith("研发群规则一")
    assert "eng.yaml" in library.problems[0]


def post(app: object, body: dict[str, object]) -> None:
    response = app.post_callback(encode(body), signed_headers(SECRET))  # type: ignore[attr-defined]
    assert response.status_code == 200


def test_the_running_service_uses_an_edited_prompt_on_the_next_message_and_group_overrides(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, prompts: Path
) -> None:
    write_group(
        prompts,
        "engineering.yaml",
        f"conversations: ['{GROUP_ID}']\nreplies:\n  empty: '研发群：请 @{{bot_name}} 并贴出报错。'\n",
    )
    with serve(make_settings(prompts_dir=prompts)) as app:
        post(app, callback(fake_dingtalk.webhook(), "第一条"))
        fake_dingtalk.wait_for(1)
        edit(prompts / "replies.yaml", "【模拟回复】", "【改过的模拟回复】")
        post(app, callback(fake_dingtalk.webhook(), "第二条"))
        fake_dingtalk.wait_for(2)
        edit(prompts / "replies.yaml", "empty: 你好，", "empty: [坏掉的 YAML")
        post(app, callback(fake_dingtalk.webhook(), "第三条"))
        fake_dingtalk.wait_for(3)
        prompts_health = app.client.get("/healthz").json()["prompts"]
        assert prompts_health["version"] >= 3  # (a reload may also catch a file half-written)
        [problem] = prompts_health["problems"]
        assert "replies.yaml: not valid YAML" in problem
        assert prompts_health["groups"] == {"groups/engineering.yaml": [GROUP_ID]}
        post(app, callback(fake_dingtalk.webhook("g1"), "", group=True))  # a bare @mention
        post(app, callback(fake_dingtalk.webhook("g2"), "", group=True, conversationId=OTHER_GROUP_ID))
        fake_dingtalk.wait_for(5)
    by_session: dict[str, list[str]] = {}
    for request in fake_dingtalk.posts("/robot/sendBySession"):
        by_session.setdefault(request.path.rsplit("=", 1)[1], []).append(request.json()["text"]["content"])
    replies = by_session["s1"] + by_session["g1"] + by_session["g2"]
    assert replies[0].startswith("【模拟回复】")
    assert "「第一条」" in replies[0]
    assert replies[1].startswith("【改过的模拟回复】")
    assert "「第二条」" in replies[1]
    assert replies[2].startswith("【改过的模拟回复】")  # last good kept
    assert "「第三条」" in replies[2]
    assert replies[3].endswith(" 研发群：请 @小钉 并贴出报错。")  # after the @mention of the sender
    assert "你好，我是小钉" in replies[4]  # another group: the defaults


def test_the_shipped_group_sample_loads_once_copied(prompts: Path) -> None:
    shutil.copy(prompts / "groups" / "example.yaml.sample", prompts / "groups" / "example.yaml")
    library = PromptLibrary(prompts)
    group = library.for_conversation("cidReplaceWithYourGroupId==")
    assert group.reply("empty", bot_name="小钉") == "研发群里直接 @小钉 并贴出你的问题或报错就好。"
    assert "优先给出可以直接运行的命令" in str(group.chat.messages[0].prompt.template)  # type: ignore[union-attr]


def test_a_prompts_folder_from_before_the_alerts_still_loads(
    prompts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A copied replies.yaml without the replies added since, with one /help, and the old claim."""
    import yaml

    path = prompts / "replies.yaml"
    replies = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("operators_told", "operator_alert", "operator_resolved"):
        del replies[key]
    commands = replies["commands"]
    commands["help"] = "旧的帮助：/help /memory /forget"
    del commands["help_direct"], commands["help_group"]
    replies["model_errors"]["authentication"] += "已通知管理员检查配置。"
    path.write_text(yaml.safe_dump(replies, allow_unicode=True), encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="agent.prompts.loader"):
        defaults = PromptLibrary(prompts).defaults
    assert defaults.command_reply("help_direct", bot_name="小钉") == "旧的帮助：/help /memory /forget"
    assert defaults.command_reply("help_group", bot_name="小钉") == "旧的帮助：/help /memory /forget"
    assert defaults.reply("operators_told") == "已通知管理员处理。"  # the bundled one
    [warning] = [r.getMessage() for r in caplog.records]
    assert "model_errors.authentication says 已通知" in warning


def test_the_spoken_mark_defaults_for_older_folders_and_must_hold_the_words(prompts: Path) -> None:
    chat = prompts / "chat.yaml"
    edit(chat, 'spoken: "[语音] {text}"\n', "")  # a folder copied before voice was marked
    assert PromptLibrary(prompts).defaults.spoken == "[语音] {text}"
    chat.write_text(chat.read_text(encoding="utf-8") + 'spoken: "（语音）"\n', encoding="utf-8")
    with pytest.raises(PromptError, match=r"chat.yaml: spoken must contain \{text\}"):
        PromptLibrary(prompts)
    (prompts / "tools.yaml").unlink()  # a folder from before tools: the bundled descriptions
    edit(chat, 'spoken: "（语音）"\n', 'spoken: "（语音）{text}"\n')
    assert "set_reminder" in PromptLibrary(prompts).defaults.tools
