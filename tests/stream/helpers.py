"""Helpers of the Stream tests: the logger to read, readiness, replies, one reconnect."""

from __future__ import annotations

from tests.conftest import RunningApp
from tests.fakes.gateway import FakeGateway
from tests.fakes.payloads import callback
from tests.fakes.servers import FakeDingTalk
from tests.waiting import wait_until

STREAM_LOGGER = "api.dingtalk.stream"


def ready(app: RunningApp) -> bool:
    return app.client.get("/readyz").status_code == 200


def texts(fake_dingtalk: FakeDingTalk) -> list[str]:
    return [reply["text"]["content"] for reply in fake_dingtalk.replies()]


def reconnect(app: RunningApp, gateway: FakeGateway, fake_dingtalk: FakeDingTalk, n: int) -> None:
    """The n-th socket works: a message pushed on it is acked and answered."""
    socket = gateway.wait_socket(n)
    wait_until(lambda: ready(app), what="/readyz 200 again")
    frame_id = gateway.push(callback(fake_dingtalk.webhook(f"after{n}"), f"重连{n}"), to=socket)
    assert gateway.wait_ack(frame_id).socket == socket.index
    wait_until(lambda: any(f"「重连{n}」" in t for t in texts(fake_dingtalk)), what="the answer")
