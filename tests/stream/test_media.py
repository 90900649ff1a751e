"""A picture that arrives over Stream: the frame is acked at once, the picture fetched through the robot
file API on DINGTALK_API_BASE (the gateway's host) with the app's token, and the answer sent."""

from __future__ import annotations

from collections.abc import Callable

from agent.settings.config import Settings
from tests import media_files
from tests.conftest import serve
from tests.fakes.gateway import FakeGateway
from tests.fakes.payloads import callback
from tests.fakes.servers import FakeDingTalk
from tests.stream.helpers import ready, texts
from tests.waiting import wait_until


def test_a_picture_over_stream_is_fetched_and_answered(
    stream_settings: Callable[..., Settings], gateway: FakeGateway, fake_dingtalk: FakeDingTalk
) -> None:
    gateway.openapi = fake_dingtalk
    fake_dingtalk.add_file("shot", media_files.picture(1024, 768, "PNG"))
    message = callback(fake_dingtalk.webhook())
    message.pop("text")
    message.update(
        msgtype="richText",
        content={"richText": [{"text": "看下"}, {"downloadCode": "shot", "type": "picture"}]},
    )
    with serve(stream_settings()) as app:
        gateway.wait_socket(1)
        wait_until(lambda: ready(app), what="/readyz 200")
        frame = gateway.push(message)
        assert gateway.wait_ack(frame).raw["code"] == 200
        fake_dingtalk.wait_for(1, path="/robot/sendBySession")
    [answer] = texts(fake_dingtalk)
    assert "收到 1 张 1024×768 的 PNG 图片和 1 段文字" in answer
    downloads = [r for r in gateway._http.requests if r.path == "/v1.0/robot/messageFiles/download"]
    assert len(downloads) == 1
    assert downloads[0].headers["x-acs-dingtalk-access-token"].startswith("token-")
