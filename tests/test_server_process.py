"""`python -m dingbot.server` as a real process: serves, answers, stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET, subprocess_env
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serves_answers_and_stops_cleanly(
    tmp_path: Path, fake_dingtalk: FakeDingTalk, stop_signal: int
) -> None:
    port = free_port()
    env = subprocess_env(
        FORCE_MOCK_OPENAI="1",
        SECRET=SECRET,
        HOST="127.0.0.1",
        PORT=str(port),
        DATABASE_PATH=str(tmp_path / "data" / "bot.db"),
        DINGTALK_OAPI_BASE=fake_dingtalk.url,
        HOME=str(tmp_path / "home"),
        TMPDIR=str(tmp_path / "tmp"),
    )
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "dingbot.server"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "server exited early"
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.1)
        response = httpx.post(
            f"http://127.0.0.1:{port}/dingtalk/callback",
            content=encode(callback(fake_dingtalk.webhook(), "进程测试")),
            headers=signed_headers(SECRET),
        )
        assert response.json() == {"msgtype": "empty"}
        [request] = fake_dingtalk.wait_for(1)
        assert "「进程测试」" in request.json()["text"]["content"]
    finally:
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "DingHook stopped" in stderr
    # every line of a message's handling names it, the background reply included
    replied = [line for line in stderr.splitlines() if "replied in" in line]
    assert replied
    assert all("[msgTest" in line for line in replied)
    assert SECRET not in stderr
    assert "进程测试" not in stderr
    assert (tmp_path / "data" / "bot.db").exists()
    # long-term memory lives beside DATABASE_PATH: nothing in the home folder or the temp folder
    assert (tmp_path / "data" / "bot_store" / "qdrant").is_dir()
    assert (tmp_path / "data" / "bot_store" / "mem0_history.db").is_file()
    assert list((tmp_path / "home").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_memory_written_with_another_embedder_stops_startup_with_one_line(tmp_path: Path) -> None:
    qdrant = tmp_path / "data" / "bot_store" / "qdrant"
    qdrant.mkdir(parents=True)
    (qdrant / "meta.json").write_text(
        json.dumps({"collections": {"dingbot_memories": {"vectors": {"size": 1536, "distance": "Cosine"}}}})
    )
    env = subprocess_env(
        FORCE_MOCK_OPENAI="1", PORT=str(free_port()), DATABASE_PATH=str(tmp_path / "data" / "bot.db")
    )
    result = subprocess.run(
        [sys.executable, "-m", "dingbot.server"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "have 1536-dim vectors but the embedder gives 512" in lines[0]
    assert "EMBEDDING_PROVIDER" in lines[0]
