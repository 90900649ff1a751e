"""`dingbot simulate`: plays DingTalk against the real service (mock model) running under uvicorn."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from agent.settings.config import Settings
from api.dingtalk.parse import parse_callback
from api.dingtalk.reply import webhook_allowed
from api.dingtalk.signature import verify_callback
from dingbot import simulate, simulate_callback
from dingbot.cli import main
from tests.conftest import ROOT, SECRET, free_port, serve, subprocess_env
from tests.waiting import PATIENCE


@dataclass
class Service:
    url: str
    port: int
    webhook_base: str  # the service's DINGTALK_OAPI_BASE: where simulate hosts DingTalk's webhook
    prompts: Path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The real app in mock mode, SECRET set, DINGTALK_OAPI_BASE on a free loopback port."""
    folder = tmp_path_factory.mktemp("simulate_service")
    prompts = folder / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    webhook_base = f"http://127.0.0.1:{free_port()}"
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):  # the developer's shell must not shape the service
            if name.startswith(("OPENAI_", "DINGTALK_", "EMBEDDING_", "MEMORY_", "BOT_", "ALLOWED_")):
                env.delenv(name)
        settings = Settings(
            _env_file=None,
            force_mock_openai=True,
            secret=SECRET,
            host="127.0.0.1",
            database_path=folder / "data" / "bot.db",
            dingtalk_oapi_base=webhook_base,
            prompts_dir=prompts,
        )
    with serve(settings) as app:
        port = int(app.url.rsplit(":", 1)[1])
        yield Service(app.url, port, webhook_base, prompts)


@pytest.fixture
def same_settings(monkeypatch: pytest.MonkeyPatch, service: Service) -> Service:
    """simulate reads the settings the service runs with (as from one .env)."""
    monkeypatch.setenv("SECRET", SECRET)
    monkeypatch.setenv("DINGTALK_OAPI_BASE", service.webhook_base)
    monkeypatch.setenv("HOST", "127.0.0.1")
    monkeypatch.setenv("PORT", str(service.port))
    monkeypatch.setattr(simulate, "QUIET_SECONDS", 0.5)
    return service


@pytest.fixture
def mock_reply(service: Service) -> Iterator[Callable[[str], None]]:
    """Change the mock model's answer template; the service reloads prompts on the next message."""
    path = service.prompts / "replies.yaml"
    original = path.read_text(encoding="utf-8")

    def change(template: str) -> None:
        data = yaml.safe_load(original)
        data["mock_reply"] = template
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    yield change
    path.write_text(original, encoding="utf-8")


def simulate_cli(*args: str) -> int:
    return main(["simulate", *args])


def test_one_to_one_reply_is_printed_as_dingtalk_shows_it(
    same_settings: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    assert simulate_cli("你好，今天北京天气怎么样？") == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == "模拟用户 (sim-user) → 小钉, one-to-one: 你好，今天北京天气怎么样？"
    assert re.fullmatch(r"小钉 · \d+\.\d\d s", lines[2]), lines[2]  # a text reply: no Markdown, no @
    assert "你说的是：「你好，今天北京天气怎么样？」" in out  # the text went through the service and back
    assert "【模拟回复】" in out
    assert re.search(r"^reply in \d+\.\d\d s \(callback acknowledged in \d+ ms\)$", out, re.MULTILINE)
    assert '"msgtype"' not in out  # shown as DingTalk shows it, not as JSON


def test_the_same_user_keeps_their_history_across_runs(
    same_settings: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    assert simulate_cli("第一句", "--user", "history-user") == 0
    assert "模型收到了 0 轮历史对话" in capsys.readouterr().out
    assert simulate_cli("第二句", "--user", "history-user") == 0
    assert "模型收到了 1 轮历史对话" in capsys.readouterr().out
    assert simulate_cli("别人的第一句", "--user", "other-user") == 0
    assert "模型收到了 0 轮历史对话" in capsys.readouterr().out


def test_group_reply_shows_the_mention_of_the_sender(
    same_settings: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    assert simulate_cli("群里的问题", "--group", "产品讨论群", "--user", "lisi01", "--nick", "李四") == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == "李四 (lisi01) → 小钉, in group “产品讨论群”, @小钉: 群里的问题"
    assert re.fullmatch(r"小钉 · \d+\.\d\d s · @李四", lines[2]), lines[2]
    assert lines[3].startswith("@李四 【模拟回复】")  # `@lisi01` in the text shows as the nick
    assert "@lisi01" not in out
    assert "「群里的问题」" in out  # the leading space DingTalk leaves in groups is gone


def test_markdown_reply_shows_the_chat_list_title_then_the_body(
    same_settings: Service, mock_reply: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    mock_reply("## 今日摘要\n- 你说：「{text}」\n- **重点**：[文档](https://example.com/doc)\n> 引用")
    assert simulate_cli("总结一下") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert re.fullmatch(r"小钉 · \d+\.\d\d s · Markdown, chat list shows “今日摘要”", lines[2]), lines[2]
    assert lines[3:7] == [
        "今日摘要",
        "• 你说：「总结一下」",
        "• 重点：文档 (https://example.com/doc)",
        "│ 引用",
    ]


def test_a_long_reply_arrives_in_parts_and_all_are_printed_in_order(
    same_settings: Service,
    mock_reply: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # simulate takes parts until none has come for QUIET_SECONDS: the gap between two parts (one send)
    # must stay below it even on a busy machine, so not the 0.5 s the other tests use
    monkeypatch.setattr(simulate, "QUIET_SECONDS", 3.0)
    # ~36,000 bytes of Chinese: more than one webhook body can carry, so the service splits it.
    mock_reply("开头「{text}」\n" + "\n".join(f"第{i:03d}行" + "长" * 40 for i in range(300)) + "\n结尾")
    assert simulate_cli("长回复") == 0
    out = capsys.readouterr().out
    headers = re.findall(r"^小钉 · \d+\.\d\d s · part (\d)/(\d)$", out, re.MULTILINE)
    assert len(headers) >= 2
    assert [int(i) for i, _ in headers] == list(range(1, len(headers) + 1))
    assert {int(n) for _, n in headers} == {len(headers)}
    assert out.index("开头「长回复」") < out.index("第000行") < out.index("第299行") < out.index("结尾")
    assert all(f"第{i:03d}行" in out for i in range(300))  # nothing lost between parts
    assert re.search(rf"^reply in .*, {len(headers)} messages, the last at ", out, re.MULTILINE)


def test_wrong_secret_prints_the_status_and_reason(
    same_settings: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECRET", "not the service's secret")
    assert simulate_cli("你好") == 1
    out, err = capsys.readouterr()
    assert "「" not in out
    assert err.count("\n") == 1
    assert err.startswith("dingbot: the service refused the callback: HTTP 401 signature does not match")
    assert "same SECRET" in err


def test_server_down_says_how_to_start_it(tmp_path: Path) -> None:
    """The real command in its own process: one line, non-zero exit."""
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "dingbot.cli", "simulate", "你好", "--url", url],
        env=subprocess_env(SECRET=SECRET, DINGTALK_OAPI_BASE=f"http://127.0.0.1:{free_port()}"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"dingbot: no service at {url} (")
    assert "Connection refused" in lines[0]
    assert "start it (to try it: `FORCE_MOCK_OPENAI=1 python -m dingbot.server`" in lines[0]


def test_with_the_default_oapi_base_it_listens_on_a_free_port_a_mock_service_accepts(
    same_settings: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DINGTALK_OAPI_BASE")  # the default: https://oapi.dingtalk.com
    assert simulate_cli("你好") == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "你说的是：「你好」" in out


def test_a_service_that_checks_signatures_tells_simulate_without_secret_what_to_set(
    same_settings: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SECRET")
    assert simulate_cli("你好") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("dingbot: the service refused the callback: HTTP 401")
    assert "the service checks signatures: set SECRET for simulate too" in err


def test_the_quick_start_server_needs_nothing_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README command 1 (mock mode, no .env, no SECRET) then `dingbot simulate "你好"`: a reply."""
    settings = Settings(_env_file=None, force_mock_openai=True, database_path=tmp_path / "db" / "bot.db")
    with serve(settings) as app:
        monkeypatch.setenv("PORT", app.url.rsplit(":", 1)[1])  # the quick start's port is 8080: taken here?
        monkeypatch.setattr(simulate, "QUIET_SECONDS", 0.5)
        assert simulate_cli("你好") == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "【模拟回复】" in out
    assert "你说的是：「你好」" in out


def test_a_real_model_service_explains_why_it_will_not_reply_to_this_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_openai: Any
) -> None:
    settings = Settings(
        _env_file=None,
        secret=SECRET,
        openai_api_key="sk-test",
        openai_api_base=f"{fake_openai.url}/v1",
        database_path=tmp_path / "db" / "bot.db",
    )
    with serve(settings) as app:
        monkeypatch.setenv("PORT", app.url.rsplit(":", 1)[1])
        monkeypatch.setenv("SECRET", SECRET)
        assert simulate_cli("你好") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "HTTP 400" in err
    assert "the service is not in mock mode (or was reached through a proxy), so it replies only to" in err
    assert "set DINGTALK_OAPI_BASE=http://127.0.0.1:9000 for both the service and simulate" in err


def test_webhook_port_busy_says_so(same_settings: Service, capsys: pytest.CaptureFixture[str]) -> None:
    port = int(same_settings.webhook_base.rsplit(":", 1)[1])
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # earlier runs left TIME_WAITs
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert simulate_cli("你好") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"dingbot: port {port} on 127.0.0.1 (from DINGTALK_OAPI_BASE=")
    assert "is in use" in err


def test_webhook_on_the_services_own_port_says_how_to_fix(
    same_settings: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DINGTALK_OAPI_BASE", same_settings.url)
    assert simulate_cli("你好") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"is the service's own address (PORT={same_settings.port})" in err
    assert "set DINGTALK_OAPI_BASE=http://127.0.0.1:9000 for both" in err


# --- what goes over the wire, seen by a stand-in service that never replies ---

Silent = tuple[str, list[tuple[dict[str, str], bytes]]]


@pytest.fixture
def silent_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[Silent]:
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *values: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            answer = b'{"msgtype":"empty"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SECRET", SECRET)
    monkeypatch.setenv("DINGTALK_OAPI_BASE", f"http://127.0.0.1:{free_port()}")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_no_reply_within_the_timeout_says_so(
    silent_service: Silent, capsys: pytest.CaptureFixture[str]
) -> None:
    url, received = silent_service
    started = time.monotonic()
    assert simulate_cli("你好", "--url", url, "--timeout", "0.5") == 1
    took = time.monotonic() - started
    assert 0.5 <= took < PATIENCE  # it waited out its --timeout, then stopped waiting
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("dingbot: no reply within 0.5 s (the service acknowledged in ")
    assert "--timeout" in err
    assert len(received) == 1


def test_the_callback_is_signed_and_shaped_like_dingtalks(
    silent_service: Silent, capsys: pytest.CaptureFixture[str]
) -> None:
    url, received = silent_service
    started_ms = int(time.time() * 1000)
    assert simulate_cli("你好", "--url", url, "--group", "测试群", "--timeout", "0.1") == 1
    first_done_ms = int(time.time() * 1000)
    assert simulate_cli("你好", "--url", url, "--group", "测试群", "--timeout", "0.1") == 1
    assert simulate_cli("你好", "--url", url, "--timeout", "0.1") == 1
    capsys.readouterr()
    (h1, b1), (_, b2), (_, b3) = received
    assert started_ms <= int(h1["timestamp"]) <= first_done_ms
    assert (
        verify_callback(
            h1,
            secret=SecretStr(SECRET),
            outgoing_token=None,
            window_seconds=60,
            now_ms=first_done_ms,  # as the service would, on receiving it (within the window)
            allow_unsigned=False,
        )
        == "sign"
    )
    group, again, direct = (json.loads(b) for b in (b1, b2, b3))
    assert group["conversationType"] == "2"
    assert group["conversationTitle"] == "测试群"
    assert group["isInAtList"] is True
    assert group["atUsers"] == [{"dingtalkId": group["chatbotUserId"]}]
    assert group["text"] == {"content": " 你好"}  # DingTalk keeps the space after the removed @bot
    expected = simulate_callback.conversation_id_for("x", "测试群")
    assert group["conversationId"] == again["conversationId"] == expected
    assert group["msgId"] != again["msgId"]
    assert started_ms <= group["createAt"] <= first_done_ms
    assert group["sessionWebhookExpiredTime"] > group["createAt"] + 80 * 60 * 1000
    assert group["senderStaffId"] == "sim-user"
    assert group["senderNick"] == "模拟用户"
    assert webhook_allowed(group["sessionWebhook"], [os.environ["DINGTALK_OAPI_BASE"]])
    assert group["sessionWebhook"] != again["sessionWebhook"]  # a session per run
    message = parse_callback(b1)
    assert message.is_group
    assert message.addressed_to_bot
    assert message.text == "你好"

    assert direct["conversationType"] == "1"
    assert "conversationTitle" not in direct
    assert direct["isInAtList"] is False
    assert direct["text"] == {"content": "你好"}
    assert direct["conversationId"] != group["conversationId"]
    assert not parse_callback(b3).is_group


# --- rendering ---
