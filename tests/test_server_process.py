"""`python -m dingbot.server` as a real process: serves, answers, stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.settings.config import Settings
from agent.storage.database import Database
from tests.conftest import SECRET, free_port, subprocess_env
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.store import sql
from tests.waiting import PATIENCE, until_served, wait_until

STARTUP_PATIENCE = 2 * PATIENCE  # a cold start imports the embedder, mem0 and LangChain


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
        until_served(process, f"http://127.0.0.1:{port}/healthz", STARTUP_PATIENCE)
        response = httpx.post(
            f"http://127.0.0.1:{port}/dingtalk/callback",
            content=encode(callback(fake_dingtalk.webhook(), "进程测试")),
            headers=signed_headers(SECRET),
            timeout=PATIENCE,
        )
        assert response.json() == {"msgtype": "empty"}
        [request] = fake_dingtalk.wait_for(1)
        assert "「进程测试」" in request.json()["text"]["content"]
    finally:
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=PATIENCE)
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


def test_a_database_migrated_by_a_newer_dingbot_stops_startup_with_one_line(
    tmp_path: Path, database_url: str | None
) -> None:
    database = tmp_path / "data" / "bot.db"
    settings = Settings(_env_file=None, database_path=database, database_url=database_url)  # type: ignore[call-arg]

    async def made_by_this_code() -> None:
        db = Database.for_settings(settings)
        await db.open()
        await db.close()

    asyncio.run(made_by_this_code())
    sql(settings, "UPDATE alembic_version SET version_num = '9001'")
    line = refused_start(tmp_path, database, **({"DATABASE_URL": database_url} if database_url else {}))
    assert line.startswith("dingbot: cannot start: database schema version 9001 is newer than this dingbot")
    assert "restore a backup" in line


def test_a_database_server_that_does_not_answer_stops_startup_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql://bot:s3cret@127.0.0.1:{free_port()}/dingbot"
    line = refused_start(tmp_path, tmp_path / "bot.db", DATABASE_URL=url)
    assert line.startswith(f"dingbot: cannot start: database postgresql://bot@127.0.0.1:{url.split(':')[3]}")
    assert "the database server does not answer: start it, or check DATABASE_URL" in line
    assert "s3cret" not in line


def test_memory_written_with_another_embedder_stops_startup_with_one_line(tmp_path: Path) -> None:
    qdrant = tmp_path / "data" / "bot_store" / "qdrant"
    qdrant.mkdir(parents=True)
    (qdrant / "meta.json").write_text(
        json.dumps({"collections": {"dingbot_memories": {"vectors": {"size": 1536, "distance": "Cosine"}}}})
    )
    line = refused_start(tmp_path, tmp_path / "data" / "bot.db")
    assert "have 1536-dim vectors but the embedder gives 512" in line
    assert "EMBEDDING_PROVIDER" in line


def refused_start(cwd: Path, database: Path, **extra: str) -> str:
    """Start the server in mock mode on `database`: it must refuse, exit code 2, one line (returned)."""
    env = subprocess_env(FORCE_MOCK_OPENAI="1", PORT=str(free_port()), DATABASE_PATH=str(database), **extra)
    result = subprocess.run(
        [sys.executable, "-m", "dingbot.server"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=STARTUP_PATIENCE,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def post_callback(url: str, body: dict[str, Any]) -> int:
    return httpx.post(url, content=encode(body), headers=signed_headers(SECRET), timeout=PATIENCE).status_code


def _start(env: dict[str, str], cwd: Path, port: int, prefix: Sequence[str] = ()) -> subprocess.Popen[str]:
    """The server (run through `prefix`, e.g. a namespace wrapper), once /healthz answers 200."""
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "dingbot.server"], env=env, cwd=cwd, stderr=subprocess.PIPE, text=True
    )
    until_served(process, f"http://127.0.0.1:{port}/healthz", STARTUP_PATIENCE)
    return process


def test_sigkill_mid_answer_and_mid_send_then_restart_answers_every_message_once(
    tmp_path: Path, fake_dingtalk: FakeDingTalk, fake_openai: FakeOpenAI
) -> None:
    port = free_port()
    env = subprocess_env(
        OPENAI_API_KEY="sk-test",
        OPENAI_API_BASE=f"{fake_openai.url}/v1",
        OPENAI_MAX_RETRIES="0",
        OPENAI_TIMEOUT="120",
        SECRET=SECRET,
        HOST="127.0.0.1",
        PORT=str(port),
        DATABASE_PATH=str(tmp_path / "bot.db"),
        DINGTALK_OAPI_BASE=fake_dingtalk.url,
        CHECK_INTERVAL_SECONDS="0.5",
    )
    fake_openai.echo = True
    # A: answered, but DingTalk is failing, so its reply waits in the outbox.
    fake_dingtalk.statuses.extend([503] * 3)
    first = callback(fake_dingtalk.webhook("a"), "甲的问题", senderStaffId="staffA")
    # B and C: the model is still answering when the process dies.
    others = [
        callback(fake_dingtalk.webhook("b"), "乙的问题", senderStaffId="staffB"),
        callback(fake_dingtalk.webhook("c"), "丙的问题", senderStaffId="staffC"),
    ]
    process = _start(env, tmp_path, port)
    try:
        url = f"http://127.0.0.1:{port}/dingtalk/callback"
        assert post_callback(url, first) == 200
        fake_dingtalk.wait_for(3)  # the first try and two quick retries, all refused
        fake_openai.delay = 60.0
        for body in others:
            assert post_callback(url, body) == 200
        wait_until(
            lambda: all(
                any(b["text"]["content"] in r.body.decode() for r in fake_openai.chats()) for b in others
            ),
            what="the model asked about both",
        )
    finally:
        process.kill()  # SIGKILL: no shutdown code runs
        process.communicate(timeout=PATIENCE)

    fake_openai.delay = 0.0
    before = len(fake_dingtalk.requests)
    process = _start(env, tmp_path, port)
    try:
        fake_dingtalk.wait_for(before + 3)
        time.sleep(1.5)  # a few periodic checks: nothing may be sent twice
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=PATIENCE)
    after = [r.json()["text"]["content"] for r in fake_dingtalk.requests[before:]]
    assert len(after) == 3, after
    for text in ("甲的问题", "乙的问题", "丙的问题"):
        assert sum(text in reply for reply in after) == 1, (text, after)
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        assert {state for (state,) in conn.execute("SELECT state FROM inbox")} == {"done"}
        assert {state for (state,) in conn.execute("SELECT state FROM outbox")} == {"sent"}
        assert conn.execute("SELECT COUNT(*) FROM inbox WHERE payload IS NOT NULL").fetchone()[0] == 0
