"""Stream mode end to end: the real app (uvicorn, SQLite, mock model) connected to a fake DingTalk gateway
(tests/fakes/gateway.py, its own threads), replies arriving at the fake session webhook."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import api.app
import api.dingtalk.stream as stream_module
from agent.settings.choices import DingTalkMode
from agent.settings.config import Settings
from api.dingtalk.stream import StreamConnection, StreamState, StreamStatus
from api.metrics import Metrics
from api.routes.health import stream_blocks_readiness
from tests.conftest import SECRET, RunningApp, serve
from tests.fakes.gateway import CLIENT_ID, CLIENT_SECRET, FakeGateway, OpenAnswer
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.waiting import PATIENCE, wait_until

STREAM_LOGGER = "api.dingtalk.stream"


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    server = FakeGateway().start()
    yield server
    server.stop()


@pytest.fixture
def stream_settings(make_settings: Callable[..., Settings], gateway: FakeGateway) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "dingtalk_mode": "stream",
            "dingtalk_client_id": CLIENT_ID,
            "dingtalk_client_secret": CLIENT_SECRET,
            "dingtalk_api_base": gateway.url,
            # no WebSocket ping (with its pong deadline) within a test, unless the test is about them
            "dingtalk_stream_heartbeat_seconds": 2 * PATIENCE,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


def sample(metrics: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text: the value of `name{labels}`, 0 when absent."""
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "") + r" ([0-9.e+-]+)"
    match = re.search(pattern, metrics)
    return float(match.group(1)) if match else 0.0


def ready(app: RunningApp) -> bool:
    return app.client.get("/readyz").status_code == 200


def texts(fake_dingtalk: FakeDingTalk) -> list[str]:
    return [reply["text"]["content"] for reply in fake_dingtalk.replies()]


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


def reconnect(app: RunningApp, gateway: FakeGateway, fake_dingtalk: FakeDingTalk, n: int) -> None:
    """The n-th socket works: a message pushed on it is acked and answered."""
    socket = gateway.wait_socket(n)
    wait_until(lambda: ready(app), what="/readyz 200 again")
    frame_id = gateway.push(callback(fake_dingtalk.webhook(f"after{n}"), f"重连{n}"), to=socket)
    assert gateway.wait_ack(frame_id).socket == socket.index
    wait_until(lambda: any(f"「重连{n}」" in t for t in texts(fake_dingtalk)), what="the answer")


@pytest.mark.parametrize(
    ("action", "reason"),
    [("disconnect", "disconnect"), ("close", "closed"), ("drop", "dropped")],
)
def test_reconnects_after_disconnect_close_and_drop(
    stream_settings: Callable[..., Settings],
    gateway: FakeGateway,
    fake_dingtalk: FakeDingTalk,
    monkeypatch: pytest.MonkeyPatch,
    action: str,
    reason: str,
) -> None:
    at_once = action in ("disconnect", "close")
    if at_once:  # any backoff would now be at least half of this (the jitter): unmistakable
        monkeypatch.setattr(stream_module, "BACKOFF_FIRST_SECONDS", 2 * PATIENCE)
    shortest_backoff = stream_module.BACKOFF_FIRST_SECONDS / 2
    with serve(stream_settings()) as app:
        first = gateway.wait_socket(1)
        reconnect(app, gateway, fake_dingtalk, 1)
        before = time.monotonic()
        getattr(gateway, action)()
        second = gateway.wait_socket(2, timeout=PATIENCE)
        took = time.monotonic() - before
        gateway.wait_closed(first)
        reconnect(app, gateway, fake_dingtalk, 2)
        assert [s.open for s in gateway.sockets] == [False, True]  # one connection per process
        metrics = app.client.get("/metrics").text
    if at_once:
        assert took < shortest_backoff, took  # at once, no backoff
    if action == "disconnect":
        assert first.close_code == 1000  # we closed the old socket ourselves, normally
    assert len(gateway.opens) == 2
    assert first.ticket != second.ticket
    assert all(gateway.tickets.values())
    assert sample(metrics, "dingbot_stream_reconnects_total", reason=reason) == 1


def test_silent_gateway_is_left_after_unanswered_heartbeats(
    stream_settings: Callable[..., Settings],
    gateway: FakeGateway,
    fake_dingtalk: FakeDingTalk,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A zombie TCP link: no pongs, no frames. The 1 s WebSocket heartbeat notices; the idle watchdog
    (180 s here, far beyond any wait below) is not what ends it: the reason says which one did."""
    caplog.set_level(logging.INFO)
    settings = stream_settings(dingtalk_stream_heartbeat_seconds=1)
    assert settings.dingtalk_stream_idle_seconds > 2 * PATIENCE
    with serve(settings) as app:
        first = gateway.silence(gateway.wait_socket(1))
        gateway.wait_socket(2)
        reconnect(app, gateway, fake_dingtalk, 2)
        metrics = app.client.get("/metrics").text
    assert first.closed.is_set()
    assert sample(metrics, "dingbot_stream_reconnects_total", reason="dropped") == 1
    assert sample(metrics, "dingbot_stream_reconnects_total", reason="idle") == 0
    assert "the gateway left WebSocket pings unanswered for 1 s" in caplog.text


def test_idle_watchdog_counts_application_frames_not_pongs(
    stream_settings: Callable[..., Settings], gateway: FakeGateway, fake_dingtalk: FakeDingTalk
) -> None:
    idle = 1.0  # below the setting's 5 s floor, to keep the test short (model_copy skips validation)
    settings = stream_settings(dingtalk_stream_heartbeat_seconds=1).model_copy(
        update={"dingtalk_stream_idle_seconds": idle}
    )
    gateway.ping_every = idle / 10  # SYSTEM pings: application frames, well inside every idle period
    with serve(settings) as app:
        first = gateway.wait_socket(1)
        # more than two idle periods (and two WebSocket heartbeats) with pings: the connection stays
        wait_until(lambda: time.monotonic() > first.opened_at + 2.5 * idle, what="2.5 idle periods")
        assert len(gateway.sockets) == 1
        assert first.open
        assert sum(a.socket == 0 for a in gateway.acks) >= 4  # the pings were flowing, and acked
        gateway.ping_every = None  # pongs still flow, frames stop
        gateway.wait_closed(first)
        # closed by the watchdog: a whole idle period after the last frame reached the service, not before
        assert first.closed_at is not None
        assert first.last_frame_at is not None
        assert first.closed_at - first.last_frame_at >= idle
        assert first.close_code == 1000
        gateway.ping_every = idle / 10  # the next connection gets frames again: it must stay up
        reconnect(app, gateway, fake_dingtalk, 2)
        metrics = app.client.get("/metrics").text
    assert sample(metrics, "dingbot_stream_reconnects_total", reason="idle") == 1


def test_bad_credentials_are_not_ready_with_one_clear_log_line(
    stream_settings: Callable[..., Settings],
    gateway: FakeGateway,
    fake_dingtalk: FakeDingTalk,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    gateway.client_secret = "the real secret"
    with serve(stream_settings()) as app:
        wait_until(  # it keeps retrying, with backoff
            lambda: (
                sample(
                    app.client.get("/metrics").text,
                    "dingbot_stream_connect_failures_total",
                    kind="credentials",
                )
                >= 2
            ),
            what="two refused attempts",
        )
        answer = app.client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["stream"] == "failing"
        reason = answer.json()["reason"]
        assert reason.startswith(
            "stream failing: gateway refused the credentials (HTTP 401 InvalidAuthentication)"
        )
        assert "DINGTALK_CLIENT_ID/DINGTALK_CLIENT_SECRET" in reason
        assert app.client.get("/healthz").status_code == 200  # the service itself is fine
        metrics = app.client.get("/metrics").text
        assert sample(metrics, "dingbot_stream_state", state="failing") == 1
        assert sample(metrics, "dingbot_stream_state", state="connected") == 0
        # fixed on DingTalk's side: the next retry connects, without a restart
        gateway.client_secret = CLIENT_SECRET
        failures = sample(
            app.client.get("/metrics").text, "dingbot_stream_connect_failures_total", kind="credentials"
        )
        # the next try comes after the backoff of the failures so far (maybe one more, under way)
        backoff = stream_module.BACKOFF_FIRST_SECONDS * 2 ** (failures - 1)
        gateway.wait_socket(
            1, timeout=PATIENCE + 2 * min(backoff, stream_module.CREDENTIALS_BACKOFF_CAP_SECONDS)
        )
        wait_until(lambda: ready(app), what="/readyz 200")
    assert gateway.sockets[0].close_code == 1000
    lines = [r for r in caplog.records if r.name == STREAM_LOGGER]
    refused = [r for r in lines if "refused the credentials" in r.getMessage()]
    assert len(refused) == 1
    assert refused[0].levelno == logging.ERROR
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert CLIENT_SECRET not in everything
    assert "the real secret" not in everything
    assert not any(ticket in everything for ticket in gateway.tickets)


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (OpenAnswer(500, {"code": "ServiceUnavailable"}), "answered HTTP 500 ServiceUnavailable"),
        (
            OpenAnswer(200, text="<html>maintenance</html>"),
            "gateway answer is not JSON (HTTP 200, text/html)",
        ),
        (OpenAnswer(200, {"ticket": "t"}), "gateway answer has no endpoint or no ticket"),
        (OpenAnswer(200, {"endpoint": "ws://127.0.0.1:9/x"}), "gateway answer has no endpoint or no ticket"),
        (OpenAnswer(200, {"endpoint": "http://x", "ticket": "t"}), "not a ws:// or wss:// URL"),
        (OpenAnswer(403, {"code": "Forbidden"}), "refused the credentials (HTTP 403 Forbidden)"),
    ],
)
def test_broken_gateway_answers_are_not_ready_without_a_crash(
    stream_settings: Callable[..., Settings],
    gateway: FakeGateway,
    fake_dingtalk: FakeDingTalk,
    answer: OpenAnswer,
    detail: str,
) -> None:
    gateway.open_answers.extend([answer] * 20)
    with serve(stream_settings()) as app:
        gateway.wait_opens(1)
        response = wait_until(
            lambda: (r := app.client.get("/readyz")).json().get("stream") == "failing" and r, what="failing"
        )
        assert response.status_code == 503
        assert detail in response.json()["reason"]
        # HTTP callbacks are unaffected by the stream (mode stream keeps the route; it is what both uses)
        assert app.client.get("/healthz").status_code == 200
    assert gateway.sockets == []


def test_a_refused_ticket_is_an_error_state_too(
    stream_settings: Callable[..., Settings], gateway: FakeGateway
) -> None:
    gateway.open_answers.extend(
        [OpenAnswer(200, {"endpoint": f"ws://127.0.0.1:{gateway.ws_port}/connect", "ticket": "forged"})] * 20
    )
    with serve(stream_settings()) as app:
        wait_until(lambda: gateway.refused_tickets >= 1, what="a refused ticket")
        reason = wait_until(
            lambda: app.client.get("/readyz").json()["reason"].partition("refused the ticket")[1],
            what="the refusal in /readyz",
        )
        assert reason
        assert "gateway WebSocket at ws://127.0.0.1" in app.client.get("/readyz").json()["reason"]
        assert "forged" not in app.client.get("/readyz").json()["reason"]


def test_shutdown_closes_the_socket_normally_and_does_not_reconnect(
    stream_settings: Callable[..., Settings], gateway: FakeGateway, fake_dingtalk: FakeDingTalk
) -> None:
    with serve(stream_settings()) as app:
        socket = gateway.wait_socket(1)
        reconnect(app, gateway, fake_dingtalk, 1)
    assert gateway.wait_closed(socket).close_code == 1000
    time.sleep(0.3)
    assert len(gateway.opens) == 1
    assert len(gateway.sockets) == 1


def test_shutdown_while_failing_and_stop_without_start(
    stream_settings: Callable[..., Settings], gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "BACKOFF_FIRST_SECONDS", 2 * PATIENCE)  # the retry: 30-60 s away
    gateway.refuse_credentials = True
    with serve(stream_settings()) as app:
        gateway.wait_opens(1)
        wait_until(lambda: app.client.get("/readyz").json().get("stream") == "failing", what="failing")
        stopping = time.monotonic()  # in the backoff now
    assert time.monotonic() - stopping < stream_module.BACKOFF_FIRST_SECONDS / 2  # not waited out
    assert len(gateway.opens) == 1

    async def never_started() -> None:
        async with httpx.AsyncClient() as http:
            stream = StreamConnection(
                settings=stream_settings(), http=http, on_message=_ignore, metrics=Metrics()
            )
            await stream.stop()
            await stream.stop()
            assert stream.status.state is StreamState.STOPPED

    asyncio.run(never_started())


async def _ignore(data: str) -> None:
    return None


def test_both_mode_answers_http_callbacks_and_stream_messages(
    stream_settings: Callable[..., Settings], gateway: FakeGateway, fake_dingtalk: FakeDingTalk
) -> None:
    with serve(stream_settings(dingtalk_mode="both")) as app:
        gateway.wait_socket(1)
        body = callback(fake_dingtalk.webhook("http"), "走HTTP")
        response = app.post_callback(encode(body), signed_headers(SECRET))
        assert response.status_code == 200
        assert response.json() == {"msgtype": "empty"}
        gateway.push(callback(fake_dingtalk.webhook("stream"), "走Stream"))
        fake_dingtalk.wait_for(2)
        gateway.push(body)  # the same msgId through the other door: one path, one dedupe
        wait_until(
            lambda: sample(app.client.get("/metrics").text, "dingbot_callbacks_total", outcome="duplicate"),
            what="the redelivery taken in",
        )
        assert app.client.get("/readyz").json()["stream"] == "connected"
    answered = texts(fake_dingtalk)
    assert len(answered) == 2
    assert any("「走HTTP」" in t for t in answered)
    assert any("「走Stream」" in t for t in answered)


def test_http_mode_never_touches_the_gateway(
    make_settings: Callable[..., Settings], gateway: FakeGateway, fake_dingtalk: FakeDingTalk
) -> None:
    settings = make_settings(
        dingtalk_client_id=CLIENT_ID, dingtalk_client_secret=CLIENT_SECRET, dingtalk_api_base=gateway.url
    )
    with serve(settings) as app:
        assert "stream" not in app.client.get("/readyz").json()
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "普通")), signed_headers(SECRET))
        fake_dingtalk.wait_for(1)
        assert "dingbot_stream_state{" not in app.client.get("/metrics").text
    assert gateway.opens == []
    assert gateway.sockets == []


def test_stream_mode_takes_no_http_callbacks(
    stream_settings: Callable[..., Settings], gateway: FakeGateway, fake_dingtalk: FakeDingTalk
) -> None:
    with serve(stream_settings(dingtalk_mode="stream")) as app:
        gateway.wait_socket(1)
        body = callback(fake_dingtalk.webhook("http"), "走HTTP")
        assert app.post_callback(encode(body), signed_headers(SECRET)).status_code == 404
        assert app.client.get("/healthz").status_code == 200
    assert fake_dingtalk.replies() == []


@pytest.mark.parametrize(
    ("mode", "state", "blocks"),
    [
        ("stream", "connected", False),
        ("stream", "connecting", True),
        ("stream", "failing", True),
        ("both", "connected", False),
        ("both", "connecting", False),  # HTTP callbacks still arrive while Stream reconnects
        ("both", "failing", True),  # bad credentials: not ready, clearly
    ],
)
def test_readiness_in_stream_and_both_modes(mode: str, state: str, blocks: bool) -> None:
    status = StreamStatus(StreamState(state), "detail", 0.0)
    assert stream_blocks_readiness(DingTalkMode(mode), status) is blocks
