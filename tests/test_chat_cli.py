"""`dingbot chat`: the service's assistant, prompts and memory in a terminal, with prompt reload."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.settings.config import DEFAULT_PROMPTS_DIR, Settings
from dingbot.cli import main
from tests.conftest import serve
from tests.fakes.openai_server import FakeOpenAI, Scripted


def scripted_input(monkeypatch: pytest.MonkeyPatch, lines: list[str | Callable[[], str]]) -> None:
    """Feed `input()` these lines (a callable runs first, e.g. to edit a file, and gives the line)."""
    queue: Iterator[str | Callable[[], str]] = iter(lines)

    def fake_input(prompt: str = "") -> str:
        try:
            line = next(queue)
        except StopIteration:
            raise EOFError from None
        return line() if callable(line) else line

    monkeypatch.setattr("builtins.input", fake_input)


@pytest.fixture
def prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "my-prompts"
    shutil.copytree(DEFAULT_PROMPTS_DIR, folder)
    monkeypatch.setenv("PROMPTS_DIR", str(folder))
    monkeypatch.setenv("FORCE_MOCK_OPENAI", "1")
    return folder


def test_chat_answers_through_the_assistant_remembers_and_shows_the_prompt(
    prompts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted_input(monkeypatch, ["我叫王小丽，我对花生过敏", "/memory", "中午吃什么？", "/prompt", "/quit"])
    assert main(["chat", "--user", "wxl", "--nick", "王小丽"]) == 0
    out = capsys.readouterr().out
    assert "long-term memory on" in out
    assert "data: dingbot_chat.db" in out  # its own data, in the working directory
    assert (tmp_path / "dingbot_chat.db").is_file()
    assert (tmp_path / "dingbot_chat_store").is_dir()
    assert "小钉> 【模拟回复】" in out
    assert "你说的是：「中午吃什么？」\n模型收到了 1 轮历史对话" in out  # history, as in the service
    assert "--- system ---\n你是「小钉」" in out  # /prompt: the last prompt the model received
    assert "正在和你说话的人：王小丽" in out
    assert "--- human ---\n中午吃什么？" in out
    # /memory right after: what the message taught is stored before the next line is handled
    assert "小钉> 我记得关于你的 2 件事：\n1. 用户叫王小丽\n2. 用户对花生过敏" in out
    assert "模型收到了 1 轮历史对话和 2 条记忆" in out  # recalled into the next prompt


def test_chat_picks_up_an_edited_prompt_on_the_next_message_and_keeps_the_last_good_one(
    prompts: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replies = prompts / "replies.yaml"
    original = replies.read_text(encoding="utf-8")

    def edit_then(text: str, new: str) -> Callable[[], str]:
        def step() -> str:
            replies.write_text(original.replace("【模拟回复】", new), encoding="utf-8")
            return text

        return step

    def break_then(text: str) -> Callable[[], str]:
        def step() -> str:
            replies.write_text(
                original.replace("markdown_title: 回复", "markdown_title: [回复"), encoding="utf-8"
            )
            return text

        return step

    scripted_input(monkeypatch, ["第一句", edit_then("第二句", "【改过的回复】"), break_then("第三句")])
    assert main(["chat", "--no-memory"]) == 0
    out = capsys.readouterr().out
    first, second, third = out.split("你说的是：")[0:3]
    assert "小钉> 【模拟回复】" in first
    assert "(prompts reloaded: version 2)\n小钉> 【改过的回复】" in second
    assert "(prompt files changed; not used, the last good version stays:)" in third
    assert "replies.yaml: not valid YAML" in third
    assert "「第三句」" in out
    assert "小钉> 【改过的回复】当前为 Mock 模式" in third.split("✗")[-1]  # the last good version


def test_chat_as_a_group_uses_the_group_override(
    prompts: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (prompts / "groups").mkdir(exist_ok=True)
    (prompts / "groups" / "eng.yaml").write_text(
        "conversations: ['cidEng/1+2==']\nreplies:\n  empty: 研发群专用：请贴出报错。\n", encoding="utf-8"
    )
    scripted_input(monkeypatch, ["", "/prompt"])
    assert main(["chat", "--no-memory", "--group", "研发群", "--conversation-id", "cidEng/1+2=="]) == 0
    out = capsys.readouterr().out
    assert "group 「研发群」" in out
    assert "小钉> 研发群专用：请贴出报错。" in out


def test_chat_will_not_share_a_memory_folder_a_running_server_holds(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FORCE_MOCK_OPENAI", "1")
    database = tmp_path / "data" / "dingbot.db"
    scripted_input(monkeypatch, ["你好"])
    with serve(make_settings(database_path=database)):
        assert main(["chat", "--database", str(database)]) == 2
    err = capsys.readouterr().err
    assert "belongs to a running DingHook service" in err
    assert "leave out --database" in err


def test_chat_with_a_real_model_client_shows_the_prompt_it_sent(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_openai.script.append(Scripted(text="来自模型服务器的回答"))
    monkeypatch.setenv("OPENAI_API_BASE", f"{fake_openai.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-for-the-local-fake-server")
    monkeypatch.setenv("OPENAI_MODEL", "qwen2.5")
    scripted_input(monkeypatch, ["你好", "/prompt", "/quit"])
    assert main(["chat", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "小钉> 来自模型服务器的回答" in out
    assert "--- human ---\n你好" in out  # what ChatOpenAI sent, recorded by the callback
    [chat] = fake_openai.chats()
    assert chat.json()["messages"][-1] == {"role": "user", "content": "你好"}


def test_chat_shows_tool_calls_as_they_happen_and_fires_reminders_in_the_terminal(
    prompts: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    def after_the_reminder() -> str:
        """The next line is typed once the reminder was shown (or never: the test fails)."""
        deadline = time.monotonic() + 30
        while not shown():
            assert time.monotonic() < deadline, "the reminder never fired in the chat"
            time.sleep(0.05)
        return "/quit"

    seen: list[str] = []

    def shown() -> bool:
        seen.append(capsys.readouterr().out)
        return any("⏰ 提醒：站起来活动一下" in chunk for chunk in seen)

    scripted_input(
        monkeypatch,
        [
            '用工具 set_reminder {"when": "PT1S", "text": "站起来活动一下"}',
            "3分钟后提醒我喝水",
            after_the_reminder,
        ],
    )
    assert main(["chat", "--no-memory"]) == 0
    out = "".join(seen) + capsys.readouterr().out
    assert "tools: reminders" in out
    assert (
        "  🔧 set_reminder(when='PT1S', text='站起来活动一下') · ⏰ 正在设置提醒…\n  🔧 set_reminder → ok"
        in out
    )
    assert "小钉> 好的，我会在" in out
    assert "\n小钉> ⏰ 提醒：站起来活动一下\n" in out
    assert "喝水" in out  # set, not due while the chat ran
    assert "⏰ 提醒：喝水" not in out


def test_chat_sends_pictures_and_files_from_local_paths(
    prompts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests import media_files

    (tmp_path / "shot.png").write_bytes(media_files.picture(800, 600))
    (tmp_path / "周报.docx").write_bytes(media_files.docx(["本周完成登录模块", "风险：人手不足"]))
    lines = ["/image shot.png 这是什么？", "/file 周报.docx", "风险是什么？", "/file missing.pdf", "/quit"]
    scripted_input(monkeypatch, lines)
    assert main(["chat", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "小钉> 收到 1 张 800×600 的 PNG 图片和 1 段文字。" in out
    assert "收到文件《周报.docx》（Word，" in out
    assert out.count("收到文件《周报.docx》") == 2  # and again with the question that followed
    assert "(no file at missing.pdf: nothing sent)" in out
