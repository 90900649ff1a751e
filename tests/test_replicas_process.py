"""Two real replicas (two server processes) on one PostgreSQL database and one Chroma server: callbacks
spread across both, duplicates among them, one replica killed (SIGKILL) mid-stream and restarted."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.chroma import chroma_server
from tests.conftest import SECRET, subprocess_env
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.store import sql
from tests.test_server_process import free_port
from tests.waiting import PATIENCE, until_served, wait_until

MESSAGES = 800  # distinct messages; one in four is sent a second time (20% of the callbacks)
RATE = 100.0  # callbacks a second
LEASE = 3.0  # CLAIM_LEASE_SECONDS: a killed replica's work is taken over after this


class Replica:
    def __init__(self, name: str, env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port), "DATABASE_PATH": str(folder / name / "bot.db")}
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}/dingtalk/callback"

    def start(self) -> None:
        self.log = (self.folder / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dingbot.server"], env=self.env, cwd=self.folder, stderr=self.log
        )
        until_served(self.process, f"http://127.0.0.1:{self.port}/readyz", what=f"replica {self.name}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=PATIENCE)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=2 * PATIENCE)
        if self.log is not None:
            self.log.close()


@pytest.fixture
def replicas(
    tmp_path: Path, database_url: str, fake_dingtalk: FakeDingTalk
) -> Iterator[tuple[Replica, Replica]]:
    with chroma_server(tmp_path / "chroma") as chroma:
        env = subprocess_env(
            FORCE_MOCK_OPENAI="1",
            SECRET=SECRET,
            HOST="127.0.0.1",
            DATABASE_URL=database_url,
            CHROMA_URL=chroma,
            DINGTALK_OAPI_BASE=fake_dingtalk.url,
            CLAIM_LEASE_SECONDS=str(LEASE),
            CHECK_INTERVAL_SECONDS="0.5",
            RATE_LIMIT_PER_MINUTE="0",
        )
        pair = Replica("a", env, tmp_path), Replica("b", env, tmp_path)
        for replica in pair:
            replica.start()
        try:
            yield pair
        finally:
            for replica in pair:
                replica.stop()


def post(client: httpx.Client, replica: Replica, body: dict[str, Any]) -> bool:
    """One callback; False when the replica is down or refused it (a balancer then tries the other)."""
    try:
        return (
            client.post(replica.url, content=encode(body), headers=signed_headers(SECRET)).status_code == 200
        )
    except httpx.TransportError:
        return False


@pytest.mark.postgres_only
def test_two_replicas_answer_every_message_once_through_a_kill(
    replicas: tuple[Replica, Replica], fake_dingtalk: FakeDingTalk, database_url: str
) -> None:
    a, b = replicas
    bodies = [
        callback(fake_dingtalk.webhook(f"s{i % 50}"), f"第{i}条消息", senderStaffId=f"staff{i % 50}")
        for i in range(MESSAGES)
    ]
    plan = []  # (body, replica index): each message to one replica, every fourth again to the other
    for i, body in enumerate(bodies):
        plan.append((body, i % 2))
        if i % 4 == 3:
            plan.append((bodies[i - 2], (i + 1) % 2))
    kill_at, restart_at = len(plan) // 2, len(plan) // 2 + int(RATE)  # A is down for about a second
    started = time.monotonic()
    with httpx.Client(timeout=PATIENCE) as client:
        for n, (body, which) in enumerate(plan):
            if n == kill_at:
                a.kill()
                killed_at = time.monotonic()
            if n == restart_at:
                a.start()
            time.sleep(max(0.0, started + n / RATE - time.monotonic()))
            first, other = (a, b) if which == 0 else (b, a)
            assert post(client, first, body) or post(client, other, body), f"callback {n} refused by both"

    def quoted(request: Any) -> str:
        try:
            text = str(request.json()["text"]["content"])
        except ValueError:
            return ""  # a send cut off by the kill: its body never arrived whole (nor would DingTalk take it)
        return text.split("「", 1)[1].split("」", 1)[0] if "「" in text else ""

    def answered() -> collections.Counter[str]:
        return collections.Counter(quoted(r) for r in fake_dingtalk.posts("/robot/sendBySession"))

    sent = time.monotonic()
    wait_until(lambda: len(answered()) == MESSAGES, timeout=6 * PATIENCE, what="every message answered")
    logs = "".join((a.folder / f"{r.name}.log").read_text() for r in (a, b))
    print(  # the figures for the record (pytest -s)
        f"\n{len(plan)} callbacks in {sent - started:.1f} s; all {MESSAGES} answered "
        f"{time.monotonic() - sent:.1f} s after the last; resumed after the kill: "
        f"{[line.split('resumed ')[1] for line in logs.splitlines() if 'resumed ' in line]}"
    )
    time.sleep(LEASE + 1.0)  # past a lease and a few periodic checks: nothing more may be sent
    counts = answered()
    assert set(counts) == {f"第{i}条消息" for i in range(MESSAGES)}  # lost: 0
    # Duplicated: only a reply DingTalk took from A just before the kill, before A could mark it sent
    # (the one window at-least-once delivery keeps: docs/architecture.md), sent again once its claim
    # lapsed. Anything else sent twice fails here.
    doubled = {text for text, n in counts.items() if n > 1}
    for text in doubled:
        first, *again = [
            r.received_at for r in fake_dingtalk.posts("/robot/sendBySession") if quoted(r) == text
        ]
        assert killed_at - 2.0 < first <= killed_at, (text, first - killed_at)
        assert all(at > killed_at for at in again), text
    assert len(doubled) <= 8, doubled  # at most what one replica sends at once
    assert sql_states(database_url) == {"done"}


def sql_states(url: str) -> set[str]:
    from agent.storage.postgres import PostgresEngine

    return {str(state) for (state,) in sql(PostgresEngine(url), "SELECT DISTINCT state FROM inbox")}
