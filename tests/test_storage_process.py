"""Storage faults met by `python -m dingbot.server` as a real process: a damaged file at startup, a disk
that fills up while a message is being answered (a real small file system of the service's own)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from tests.conftest import SECRET, subprocess_env
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.test_server_process import STARTUP_PATIENCE, _start, free_port, refused_start
from tests.waiting import PATIENCE, wait_until


def _damaged(path: Path) -> None:
    """A database whose history table's root page was overwritten: it opens, but is not sound."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE history (id INTEGER PRIMARY KEY, content TEXT)")
        conn.executemany("INSERT INTO history (content) VALUES (?)", [("x" * 300,) for _ in range(200)])
        root = int(conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'history'").fetchone()[0])
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    with path.open("r+b") as file:
        file.seek((root - 1) * page)
        file.write(b"\xa5" * page)


@pytest.mark.parametrize("how", ["a spoiled page", "truncated"])
def test_a_damaged_database_stops_startup_with_one_line(tmp_path: Path, how: str) -> None:
    database = tmp_path / "data" / "bot.db"
    database.parent.mkdir()
    _damaged(database)
    if how == "truncated":
        os.truncate(database, database.stat().st_size // 3)
    line = refused_start(tmp_path, database)
    assert line.startswith(f"dingbot: cannot start: database {database} (")
    assert "restore a backup" in line


def _namespaces() -> bool:
    """User + mount namespaces: the service gets a small tmpfs of its own, as any user, no root needed."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"]).returncode == 0


def _fill(folder: Path) -> Path:
    """Write zeros into `folder` until its file system says it is full."""
    filler = folder / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as file:
        while _written(file, chunk):
            pass
    return filler


def _written(file: BinaryIO, chunk: bytes) -> bool:
    """False once the file system refuses the chunk for want of space (any other error fails the test)."""
    try:
        file.write(chunk)
        file.flush()
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return False
    return True


@pytest.mark.skipif(not _namespaces(), reason="unshare cannot make user and mount namespaces on this machine")
def test_a_full_disk_refuses_callbacks_then_resumes_at_once_when_space_returns(
    tmp_path: Path, fake_dingtalk: FakeDingTalk, fake_openai: FakeOpenAI
) -> None:
    disk = tmp_path / "disk"  # a 32 MiB tmpfs inside the service's own mount namespace
    disk.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = subprocess_env(
        OPENAI_API_KEY="sk-test",
        OPENAI_API_BASE=f"{fake_openai.url}/v1",
        OPENAI_MAX_RETRIES="0",
        SECRET=SECRET,
        HOST="127.0.0.1",
        PORT=str(port),
        DATABASE_PATH=str(disk / "bot.db"),
        DINGTALK_OAPI_BASE=fake_dingtalk.url,
        CHECK_INTERVAL_SECONDS="600",  # nothing but the storage probe may bring the work back
    )
    mount = 'mount -t tmpfs -o size=32m tmpfs "$0" && exec "$@"'
    wrapper = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount, str(disk)]
    process = _start(env, tmp_path, port, prefix=wrapper)
    seen = Path(f"/proc/{process.pid}/root{disk}")  # the service's tmpfs, as this process can reach it
    first = callback(fake_dingtalk.webhook("a"), "甲的问题", msgId="msgDiskA", senderStaffId="staffA")
    second = callback(fake_dingtalk.webhook("b"), "乙的问题", msgId="msgDiskB", senderStaffId="staffB")
    url = f"{base}/dingtalk/callback"
    try:
        wait_until(
            lambda: httpx.get(f"{base}/healthz").json()["model_endpoint"]["state"] == "ok",
            timeout=STARTUP_PATIENCE,
            what="the startup model check",
        )
        thinking = threading.Event()
        fake_openai.script.append(Scripted(text="很长的回答。" * 600, hold=thinking))  # ~11 KB: new pages
        assert _post(url, first).status_code == 200
        wait_until(lambda: any("甲的问题" in r.body.decode() for r in fake_openai.chats()), what="the model")
        filler = _fill(seen)
        thinking.set()  # the answer comes while the disk is full: it cannot be stored
        ready = wait_until(
            lambda: (r := httpx.get(f"{base}/readyz")).status_code == 503 and r.json(), what="/readyz 503"
        )
        assert ready["reason"] == "database full"
        assert "the disk holding it is full" in ready["database_problem"]  # asked from this machine
        refused = _post(url, second)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert "sendBySession" not in refused.text
        metrics = httpx.get(f"{base}/metrics").text
        assert "dingbot_database_ok 0.0" in metrics
        assert not fake_dingtalk.requests  # nothing was sent for the first message yet

        filler.unlink()  # space returns: the first message is answered with no redelivery
        [answered] = fake_dingtalk.wait_for(1)
        assert answered.path.endswith(
            "session=a"
        )  # answered anew: the answer that could not be stored is gone
        assert sum("甲的问题" in r.body.decode() for r in fake_openai.chats()) == 2
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert _post(url, second).status_code == 200  # DingTalk's redelivery of the refused one
        wait_until(
            lambda: any(r.path.endswith("session=b") for r in fake_dingtalk.requests),
            what="the second reply",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=PATIENCE)
    assert process.returncode == 0, stderr
    storage_errors = [
        line for line in stderr.splitlines() if "ERROR" in line and "agent.storage.health" in line
    ]
    assert len(storage_errors) == 1, stderr  # one line a minute, however many statements failed
    assert f"database {disk / 'bot.db'} (database or disk is full)" in storage_errors[0]
    assert "works again" in stderr
    assert "Traceback" not in stderr
    assert "Task exception was never retrieved" not in stderr
    assert "HTTP Request:" not in stderr  # openai 3.x's vendored httpx2/httpcore2 log every request at INFO


def _post(url: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(url, content=encode(body), headers=signed_headers(SECRET), timeout=PATIENCE)
