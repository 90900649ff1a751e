"""The `dingbot` command: sign (headers for a test callback) and catch (a local reply catcher)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dingbot.cli import main
from tests.conftest import subprocess_env
from tests.fakes.servers import FakeDingTalk
from tests.waiting import PATIENCE


def test_sign_prints_the_published_vector(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECRET", "this is a secret")
    assert main(["sign", "--timestamp", "1577262236757"]) == 0
    out = capsys.readouterr().out
    assert out == "timestamp: 1577262236757\nsign: DJrE6qdyVGCQz9z5r2MDuNcNAhwYnuAkyj13cx169CA=\n"


def test_sign_without_secret_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sign"]) == 2
    assert "SECRET is not set" in capsys.readouterr().err


def test_catch_prints_replies_and_answers_errcode_zero(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "dingbot.cli", "catch", "--port", str(port)],
        env=subprocess_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/robot/sendBySession", json={"text": {"content": "回复"}}
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert answer.json() == {"errcode": 0, "errmsg": "ok"}
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=PATIENCE)
    assert '"content": "回复"' in out


def test_notify_sends_a_signed_notice_and_queues_past_the_minute_limit(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fake_dingtalk: FakeDingTalk,
) -> None:
    monkeypatch.setenv("ACCESS_TOKEN", "robot-token")
    monkeypatch.setenv("SECRET", "SEC-push")
    monkeypatch.setenv("DINGTALK_OAPI_BASE", fake_dingtalk.url)
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "bot.db"))
    for i in range(20):
        assert main(["notify", f"通知 {i}"]) == 0
    assert capsys.readouterr().out == "sent\n" * 20
    assert main(["notify", "## 第 21 条", "--markdown", "--title", "周报"]) == 0
    assert capsys.readouterr().out.startswith("queued (DingTalk allows a robot 20 messages a minute)")
    sent = fake_dingtalk.posts("/robot/send")
    assert len(sent) == 20
    assert "sign=" in sent[0].path
    assert "robot-token" not in capsys.readouterr().err


def test_notify_without_access_token_says_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notify", "你好"]) == 2
    assert "ACCESS_TOKEN is not set" in capsys.readouterr().err


def test_notify_reports_dingtalks_refusal(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fake_dingtalk: FakeDingTalk,
) -> None:
    fake_dingtalk.robot_errcodes.append(310000)
    monkeypatch.setenv("ACCESS_TOKEN", "robot-token")
    monkeypatch.setenv("DINGTALK_OAPI_BASE", fake_dingtalk.url)
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "bot.db"))
    assert main(["notify", "没有关键词"]) == 1
    err = capsys.readouterr().err
    assert "errcode 310000" in err
    assert "keywords, signature, timestamp or IP whitelist" in err
    assert "robot-token" not in err


def test_version_is_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"dingbot {version('dinghook')}\n"
