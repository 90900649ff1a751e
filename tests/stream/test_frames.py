"""Stream mode end to end, frames and acks: the real app (uvicorn, SQLite, mock model) connected to a fake
DingTalk gateway (tests/fakes/gateway.py, its own threads), replies arriving at the fake session
webhook."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest

import api.app
from agent.settings.config import Settings
from api.dingtalk.stream import StreamConnection, StreamState
from tests.conftest import serve
from tests.fakes.gateway import CLIENT_ID, CLIENT_SECRET, FakeGateway
from tests.fakes.payloads import callback
from tests.fakes.servers import FakeDingTalk
from tests.prometheus import sample
from tests.stream.helpers import ready, texts
from tests.waiting import PATIENCE, wait_until


def test_pushed_messages_are_acked_while_their_answers_are_still_on_the_way(
    stream_settings: Callable[..., Settings],
    gateway: FakeGateway,
    fake_dingtalk: FakeDingTalk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Acked before any work: DingTalk holds the first answer, and one person's messages are answered in
    order, so all five acks arrive while none of the five answers has been delivered. (How fast an ack
    is, is bench/stream_ack.py's business, not a test's.)"""
    monkeypatch.setattr(api.app, "SEND_TIMEOUT_SECONDS", 2 * PATIENCE)  # the held send is not given up on
    first_answer = threading.Event()
    fake_dingtalk.holds.append(first_answer)
    with serve(stream_settings()) as app:
        gateway.wait_socket(1)
        wait_until(lambda: ready(app), what="/readyz 200")
        assert app.client.get("/readyz").json()["stream"] == "connected"
        for n in range(5):
            frame_id = gateway.push(callback(fake_dingtalk.webhook(f"s{n}"), f"第{n}条"))
            ack = gateway.wait_ack(frame_id)
            assert ack.raw == {
                "code": 200,
                "headers": {"contentType": "application/json", "messageId": frame_id},
                "message": "OK",
                "data": '{"response": null}',
            }
        fake_dingtalk.wait_for(1)  # the first answer reached DingTalk, which has not answered it yet
        assert len(fake_dingtalk.requests) == 1  # the other four wait behind it
        first_answer.set()
        fake_dingtalk.wait_for(5)
        metrics = app.client.get("/metrics").text
    for n in range(5):
        assert sum(f"「第{n}条」" in t for t in texts(fake_dingtalk)) == 1
    # the gateway-open request: the app's credentials, the bot-message subscription, a ticket used once
    [opened] = gateway.opens
    body = opened.json()
    assert body["clientId"] == CLIENT_ID
    assert body["clientSecret"] == CLIENT_SECRET
    assert body["subscriptions"] == [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]
    assert body["ua"].startswith("dinghook/")
    assert body["localIp"] == "127.0.0.1"
    assert list(gateway.tickets.values()) == [True]
    assert gateway.sockets[0].ticket in gateway.tickets
    assert gateway.refused_tickets == 0
    assert sample(metrics, "dingbot_stream_state", state="connected") == 1
    assert sample(metrics, "dingbot_stream_frames_total", type="callback") == 5
    assert sample(metrics, "dingbot_callbacks_total", outcome="accepted") == 5


def test_ping_is_echoed_and_every_frame_is_acked(
    stream_settings: Callable[..., Settings], gateway: FakeGateway, fake_dingtalk: FakeDingTalk
) -> None:
    with serve(stream_settings()) as app:
        gateway.wait_socket(1)
        ping = gateway.ping()
        event = gateway.send_frame("EVENT", "chat_update_title", {"title": "新群名"})
        other = gateway.send_frame("CALLBACK", "/v1.0/card/instances/callback", {"value": 1})
        gateway.current().conn.send("not a frame")  # ignored, and the connection stays
        pushed = gateway.push(callback(fake_dingtalk.webhook(), "在吗"))
        ping_ack = gateway.wait_ack(ping)
        assert ping_ack.code == 200
        assert ping_ack.raw["headers"]["messageId"] == ping
        assert ping_ack.data == gateway.frames[ping]["data"]  # echoed as it came
        assert "opaque" in json.loads(ping_ack.data)
        assert gateway.wait_ack(event).code == 200
        assert gateway.wait_ack(other).code == 200
        assert gateway.wait_ack(pushed).code == 200
        fake_dingtalk.wait_for(1)
        time.sleep(0.2)
        metrics = app.client.get("/metrics").text
    assert len(fake_dingtalk.replies()) == 1  # the card callback is acked, not answered
    assert sample(metrics, "dingbot_stream_frames_total", type="system") == 1
    assert sample(metrics, "dingbot_stream_frames_total", type="event") == 1
    assert sample(metrics, "dingbot_stream_frames_total", type="invalid") == 1
    assert len(gateway.sockets) == 1


def test_redelivered_msgid_in_a_new_frame_is_acked_and_answered_once(
    stream_settings: Callable[..., Settings], gateway: FakeGateway, fake_dingtalk: FakeDingTalk
) -> None:
    with serve(stream_settings()) as app:
        gateway.wait_socket(1)
        body = callback(fake_dingtalk.webhook(), "只回答一次")
        frames = [gateway.push(body), gateway.push(body)]  # back to back, two frame ids
        fake_dingtalk.wait_for(1)
        frames.append(gateway.push(body))  # after the answer
        for frame_id in frames:
            assert gateway.wait_ack(frame_id).code == 200
        gateway.push(callback(fake_dingtalk.webhook("later"), "下一条"))
        fake_dingtalk.wait_for(2)
        # an acked frame is taken in after its ack: wait until both redeliveries have been

        def both_taken_in() -> str:
            text = app.client.get("/metrics").text
            return text if sample(text, "dingbot_callbacks_total", outcome="duplicate") >= 2 else ""

        metrics = wait_until(both_taken_in, what="both redeliveries taken in")
    assert len(frames) == len(set(frames)) == 3
    assert sum("「只回答一次」" in t for t in texts(fake_dingtalk)) == 1
    assert sample(metrics, "dingbot_callbacks_total", outcome="duplicate") == 2


def test_ack_goes_out_before_a_slow_handler_finishes(
    stream_settings: Callable[..., Settings], gateway: FakeGateway, fake_dingtalk: FakeDingTalk
) -> None:
    """The connection on its own, with a handler that does not return until the test lets it."""
    received: list[str] = []

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow_handler(data: str) -> None:
            received.append(data)
            await release.wait()

        async with httpx.AsyncClient() as http:
            stream = StreamConnection(settings=stream_settings(), http=http, on_message=slow_handler)
            await stream.start()
            await asyncio.to_thread(gateway.wait_socket, 1)
            body = callback(fake_dingtalk.webhook(), "慢")
            first = gateway.push(body)
            ack = await asyncio.to_thread(gateway.wait_ack, first)
            assert ack.code == 200
            second = gateway.push(callback(fake_dingtalk.webhook(), "又一条"))
            await asyncio.to_thread(gateway.wait_ack, second)  # the loop is not waiting for the first
            ping = gateway.ping()
            await asyncio.to_thread(gateway.wait_ack, ping)
            assert not release.is_set()
            assert len(received) == 2
            assert json.loads(received[0]) == body
            release.set()
            await stream.stop()
            assert stream.status.state is StreamState.STOPPED

    asyncio.run(scenario())


def test_a_failing_handler_does_not_stop_the_connection(
    stream_settings: Callable[..., Settings], gateway: FakeGateway, fake_dingtalk: FakeDingTalk
) -> None:
    calls: list[str] = []

    async def broken(data: str) -> None:
        calls.append(data)
        raise RuntimeError("database is locked")

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            stream = StreamConnection(settings=stream_settings(), http=http, on_message=broken)
            await stream.start()
            await asyncio.to_thread(gateway.wait_socket, 1)
            for text in ("一", "二"):
                frame_id = gateway.push(callback(fake_dingtalk.webhook(), text))
                await asyncio.to_thread(gateway.wait_ack, frame_id)
            await asyncio.to_thread(gateway.wait_ack, gateway.ping())
            assert stream.status.state is StreamState.CONNECTED
            await stream.stop()

    asyncio.run(scenario())
    assert len(calls) == 2
    assert len(gateway.sockets) == 1
