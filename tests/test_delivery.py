"""What happens to accepted messages: size limits, stopping mid-answer, stale claims, expiry."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import api.app
from agent.memory.history import HistoryStore, Turn
from agent.settings.config import Settings
from agent.storage.connection import Connection
from agent.storage.database import Database
from agent.storage.engine import Engine
from api.delivery.inbox import Inbox
from api.delivery.outbox import Outbox
from api.dingtalk.reply import Route
from tests.assistants import person_message
from tests.conftest import SECRET, serve
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.store import sql
from tests.waiting import wait_until


def states(where: Settings) -> dict[str, str]:
    return dict(sql(where, "SELECT msg_id, state FROM inbox"))


def test_oversized_body_gets_413_before_parsing(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    big = encode(callback(fake_dingtalk.webhook(), "长" * 30_000))
    assert len(big) > 64 * 1024
    with serve(make_settings()) as app:
        response = app.post_callback(big, signed_headers(SECRET))
        assert response.status_code == 413
        assert response.json() == {"error": "body larger than 65536 bytes"}

        def chunks():  # no Content-Length: the limit holds while streaming
            yield big[:40_000]
            yield big[40_000:]

        chunked = app.client.post("/dingtalk/callback", content=chunks(), headers=signed_headers(SECRET))
        assert chunked.status_code == 413
        fits = encode(callback(fake_dingtalk.webhook(), "长" * 10_000))
        assert app.post_callback(fits, signed_headers(SECRET)).status_code == 200
        fake_dingtalk.wait_for(1)


def test_lone_surrogate_text_still_gets_a_reply(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    raw = encode(callback(fake_dingtalk.webhook(), "XX")).replace(b'"XX"', b'"\\ud800\xe4\xbd\xa0"')
    with serve(make_settings()) as app:
        assert app.post_callback(raw, signed_headers(SECRET)).status_code == 200
        [request] = fake_dingtalk.wait_for(1)
    assert "「\ufffd你」" in request.json()["text"]["content"]


def test_stopping_mid_answer_lets_the_redelivery_be_answered(
    make_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    fake_dingtalk: FakeDingTalk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api.app, "SHUTDOWN_GRACE_SECONDS", 0.2)
    settings = make_settings(
        force_mock_openai=False,
        openai_api_key="sk-test",
        openai_api_base=f"{fake_openai.url}/v1",
        openai_max_retries=0,
        openai_timeout=5,
    )
    body = callback(fake_dingtalk.webhook(), "慢问题")
    # the first answer never comes before the service stops (its 0.2 s grace runs out)
    fake_openai.script.extend(
        [Scripted(text="太慢了", hold=threading.Event()), Scripted(text="重启后的回答")]
    )
    with serve(settings) as app:
        app.post_callback(encode(body), signed_headers(SECRET))
        fake_openai.wait_for(1, path="/chat/completions")  # the model is working on it; now stop
    assert states(settings) == {body["msgId"]: "failed"}
    assert fake_dingtalk.requests == []
    with serve(settings) as app:
        assert app.post_callback(encode(body), signed_headers(SECRET)).json() == {"msgtype": "empty"}
        [request] = fake_dingtalk.wait_for(1)
    assert request.json()["text"]["content"] == "重启后的回答"
    assert states(settings) == {body["msgId"]: "done"}


def test_claims(database_target: Path | Engine) -> None:
    async def scenario() -> list[bool]:
        db = Database(database_target)
        await db.open()
        try:
            fresh = Inbox(db, lease_seconds=3600)
            impatient = Inbox(db, lease_seconds=0)
            message = person_message(message_id="m1")
            results = [await fresh.claim(message), await fresh.claim(message)]  # new, then in progress
            await asyncio.sleep(0.01)
            results.append(await impatient.claim(message))  # processing for longer than any answer: stuck
            results.append(await fresh.claim(message))
            await fresh.mark_failed("m1")
            results.append(await fresh.claim(message))  # its processing failed: taken again
            return results
        finally:
            await db.close()

    assert asyncio.run(scenario()) == [True, False, True, False, True]


def test_periodic_check_expires_old_rows_and_keeps_recent_ones(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(check_interval_seconds=0.05)
    route = Route("http://127.0.0.1:9/x", None, "cid1", False, "u1", "robot")

    async def prepare() -> None:
        db = Database.for_settings(settings)
        await db.open()
        try:
            inbox, outbox, history = Inbox(db, lease_seconds=3600), Outbox(db), HistoryStore(db, 10)
            for msg_id in ("old-done", "new-done"):
                await inbox.claim(person_message(message_id=msg_id))
                parts = await outbox.store_reply(msg_id, "corp:u1", route, [{"msgtype": "text"}])
                await outbox.mark_sent(parts[0].id)
            await history.append("scope", Turn("旧问题", "旧回答"), "p1", said_at=time.time())
            await history.append("scope", Turn("新问题", "新回答"), "p1", said_at=time.time())
            old = time.time() - 31 * 86400

            def age(conn: Connection) -> None:
                # a row from a version that stored no message: kept, however old, until it is answered
                conn.execute(
                    "INSERT INTO inbox (msg_id, state, received_at, updated_at) VALUES (?, ?, ?, ?)",
                    ("old-processing", "processing", old, old),
                )
                conn.execute("UPDATE inbox SET updated_at = ? WHERE msg_id LIKE 'old-%'", (old,))
                conn.execute("UPDATE outbox SET updated_at = ? WHERE msg_id LIKE 'old-%'", (old,))
                conn.execute("UPDATE history SET created_at = ? WHERE content LIKE '旧%'", (old,))

            await db.run(age)
        finally:
            await db.close()

    asyncio.run(prepare())
    with serve(settings) as app:
        check = app.server.config.app.state.services.check
        wait_until(lambda: check.runs >= 2, what="two periodic checks")
    assert states(settings) == {"new-done": "done", "old-processing": "processing"}
    assert sql(settings, "SELECT msg_id FROM outbox") == [("new-done",)]
    assert sql(settings, "SELECT content FROM history WHERE role = 'human'") == [("新问题",)]


def test_periodic_check_runs_on_its_interval(make_settings: Callable[..., Settings]) -> None:
    interval = 0.05
    started = time.monotonic()
    with serve(make_settings(check_interval_seconds=interval)) as app:
        check = app.server.config.app.state.services.check
        wait_until(lambda: check.runs >= 3, what="three periodic checks", every=0.01)
        took = time.monotonic() - started
    assert took >= 2 * interval  # the first at once, then one interval between each


def test_a_long_answer_arrives_in_several_messages_under_the_limit(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    text = "\n".join("这是很长的一行问题内容" * 20 for _ in range(90))  # ~54 KB, echoed by the mock
    with serve(make_settings(max_message_chars=100_000)) as app:
        assert (
            app.post_callback(
                encode(callback(fake_dingtalk.webhook(), text)), signed_headers(SECRET)
            ).status_code
            == 200
        )
        wait_until(
            lambda: text in "\n".join(r.json()["text"]["content"] for r in fake_dingtalk.requests),
            what="the whole answer",
        )
    assert len(fake_dingtalk.requests) >= 3
    assert all(len(r.body) <= 19_000 for r in fake_dingtalk.requests)
    received = "\n".join(r.json()["text"]["content"] for r in fake_dingtalk.requests)
    assert text in received
