"""Stream mode end to end, the connection's life: the real app (uvicorn, SQLite, mock model) connected to a
fake DingTalk gateway (tests/fakes/gateway.py, its own threads), replies arriving at the fake session
webhook."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import pytest

import api.dingtalk.stream as stream_module
from agent.settings.config import Settings
from api.dingtalk.stream import StreamConnection, StreamState
from api.metrics import Metrics
from tests.conftest import serve
from tests.fakes.gateway import CLIENT_SECRET, FakeGateway, OpenAnswer
from tests.fakes.servers import FakeDingTalk
from tests.prometheus import sample
from tests.stream.helpers import STREAM_LOGGER, ready, reconnect
from tests.waiting import PATIENCE, wait_until


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
