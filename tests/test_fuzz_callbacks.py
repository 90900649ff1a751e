"""Property-based fuzz of signed callbacks: whatever the body, never a 5xx, and the server stays healthy."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.settings.config import Settings
from tests.conftest import SECRET, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.waiting import wait_until

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "msgId", "msgtype", "conversationId", "conversationType", "senderId", "senderStaffId", "senderNick",
    "sessionWebhook", "text", "content", "createAt", "isInAtList", "atUsers", "robotCode", "chatbotCorpId",
]  # fmt: skip


def test_signed_garbage_never_gets_a_5xx(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    with serve(make_settings()) as app:
        webhook = fake_dingtalk.webhook()

        mutated = st.builds(
            lambda changes, text: {**callback(webhook, text), **changes},
            st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
            st.text(max_size=50),
        )

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            st.one_of(
                mutated.map(encode),
                json_values.map(lambda v: json.dumps(v).encode()),
                st.binary(max_size=200),
            )
        )
        def check(raw: bytes) -> None:
            response = app.post_callback(raw, signed_headers(SECRET))
            assert response.status_code < 500, (response.status_code, raw[:200])
            assert response.status_code in (200, 400, 403, 413)

        check()
        wait_until(lambda: not app.client.get("/healthz").json()["in_flight"], what="nothing in flight")
        health: dict[str, Any] = app.client.get("/healthz").json()
        assert health["status"] == "ok"
        # and it still answers a normal message (on its own session: not a late reply to a fuzzed one)
        normal = callback(fake_dingtalk.webhook("after-fuzz"), "还好吗")
        assert app.post_callback(encode(normal), signed_headers(SECRET)).status_code == 200
        wait_until(
            lambda: any(r.path.endswith("session=after-fuzz") for r in list(fake_dingtalk.requests)),
            what="the answer to a normal message",
        )


def test_stale_callbacks_are_acknowledged_not_answered(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    old = int(time.time() * 1000) - 601 * 1000
    with serve(make_settings()) as app:
        response = app.post_callback(
            encode(callback(fake_dingtalk.webhook(), createAt=old)), signed_headers(SECRET)
        )
        assert response.json() == {"msgtype": "empty"}
        time.sleep(0.3)
        assert 'dingbot_callbacks_total{outcome="stale"} 1.0' in app.client.get("/metrics").text
    assert fake_dingtalk.requests == []
