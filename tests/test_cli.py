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
        deadline = time.monotonic() + 10
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
        out, _ = process.communicate(timeout=10)
    assert '"content": "回复"' in out
