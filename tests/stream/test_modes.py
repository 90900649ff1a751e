"""Stream mode end to end, http, stream and both: the real app (uvicorn, SQLite, mock model) connected to a
fake DingTalk gateway (tests/fakes/gateway.py, its own threads), replies arriving at the fake session
webhook."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.settings.choices import DingTalkMode
from agent.settings.config import Settings
from api.dingtalk.stream import StreamState, StreamStatus
from api.routes.health import stream_blocks_readiness
from tests.conftest import SECRET, serve
from tests.fakes.gateway import CLIENT_ID, CLIENT_SECRET, FakeGateway
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.prometheus import sample
from tests.stream.helpers import texts
from tests.waiting import wait_until


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
