"""Fixtures of the Stream tests: a fake DingTalk gateway in its own threads, and settings that use it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.settings.config import Settings
from tests.fakes.gateway import CLIENT_ID, CLIENT_SECRET, FakeGateway
from tests.waiting import PATIENCE


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
