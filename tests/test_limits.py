"""Limits and access: rate limit per person, long input, allowlists, robot and organisation checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.limits import RateLimiter, SharedRateLimiter
from agent.settings.config import Settings
from agent.storage.database import Database
from agent.storage.engine import Engine
from tests.conftest import SECRET, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk


def test_rate_limiter_window() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [
        limiter.allow_now("a"),
        limiter.allow_now("a"),
        limiter.allow_now("a"),
        limiter.allow_now("b"),
    ] == [
        True,
        True,
        False,
        True,
    ]
    now[0] = 59.9
    assert not limiter.allow_now("a")
    now[0] = 60.0
    assert limiter.allow_now("a")
    now[0] = 200.0
    asyncio.run(limiter.forget_idle())
    assert limiter._seen == {}
    assert all(RateLimiter(0).allow_now("a") for _ in range(100))


def post(app: Any, body: dict[str, Any]) -> Any:
    return app.post_callback(encode(body), signed_headers(SECRET))


def test_rate_limited_person_gets_a_polite_answer_without_the_model(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    with serve(make_settings(rate_limit_per_minute=2)) as app:
        for i in range(3):
            post(app, callback(fake_dingtalk.webhook(), f"第{i}条"))
            fake_dingtalk.wait_for(i + 1)
        post(app, callback(fake_dingtalk.webhook(), "另一个人", senderStaffId="other", senderId="$:other"))
        fake_dingtalk.wait_for(4)
    texts = [r["text"]["content"] for r in fake_dingtalk.replies()]
    assert "模拟回复" in texts[0]
    assert "模拟回复" in texts[1]
    assert texts[2] == "你发消息有点快，我一分钟最多回答你 2 条。请稍等一会儿再问我。"
    assert "模拟回复" in texts[3]  # limits are per person


def test_long_input_is_truncated_with_a_note(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    with serve(make_settings(max_message_chars=10)) as app:
        post(app, callback(fake_dingtalk.webhook(), "一二三四五六七八九十多出来的部分"))
        [reply] = fake_dingtalk.wait_for(1)
    text = reply.json()["text"]["content"]
    assert text.startswith("（你的消息比较长，我只读了前 10 个字。）\n【模拟回复】")
    assert "「一二三四五六七八九十」" in text


@pytest.mark.parametrize(
    ("settings", "overrides", "answered"),
    [
        ({"allowed_users": "042217062297, someone"}, {}, True),
        ({"allowed_users": "someone"}, {}, False),
        ({"allowed_users": "$:LWCP_v1:$Y5u1kO0ehyqD3uPHdFmyPA=="}, {"senderStaffId": ""}, True),
        ({"allowed_groups": "cidOther=="}, {"group": True}, False),
        ({"allowed_groups": "cidGroupAbc/x+1=="}, {"group": True}, True),
        ({"allowed_groups": "cidOther=="}, {}, True),  # one-to-one chats are not groups
    ],
)
def test_allowlists(
    make_settings: Callable[..., Settings],
    fake_dingtalk: FakeDingTalk,
    settings: dict[str, str],
    overrides: dict[str, Any],
    answered: bool,
) -> None:
    overrides = dict(overrides)  # the parameter is shared by every engine's run of this test
    group = overrides.pop("group", False)
    with serve(make_settings(**settings)) as app:
        assert (
            post(app, callback(fake_dingtalk.webhook(), "在吗", group=group, **overrides)).status_code == 200
        )
        if answered:
            fake_dingtalk.wait_for(1)
        time.sleep(0.3)
    assert len(fake_dingtalk.requests) == (1 if answered else 0)


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"dingtalk_robot_code": "dingOTHER"}, "another robot"),
        ({"dingtalk_corp_id": "dingOTHERCORP"}, "another organisation"),
    ],
)
def test_callbacks_for_another_robot_or_organisation_are_refused(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, settings: dict[str, str], reason: str
) -> None:
    with serve(make_settings(**settings)) as app:
        response = post(app, callback(fake_dingtalk.webhook()))
        assert response.status_code == 403
        assert reason in response.json()["error"]
    with serve(
        make_settings(dingtalk_robot_code="dingabcdefc6gk", dingtalk_corp_id="ding9f50b15bccd16741")
    ) as app:
        assert post(app, callback(fake_dingtalk.webhook())).status_code == 200
        fake_dingtalk.wait_for(1)


def test_a_shared_limit_holds_across_replicas(database_target: Path | Engine) -> None:
    """Two processes (each its own connections) counting one person at once: the limit is the limit."""

    async def scenario() -> list[bool]:
        first, second = Database(database_target), Database(database_target)
        await first.open()
        await second.open()
        try:
            limiters = [SharedRateLimiter(first, 3), SharedRateLimiter(second, 3)]
            return list(await asyncio.gather(*(limiters[i % 2].allow("p") for i in range(10))))
        finally:
            await first.close()
            await second.close()

    assert sorted(asyncio.run(scenario())) == [False] * 7 + [True] * 3
