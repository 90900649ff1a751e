"""Proactive notices through the custom-robot webhook: signed per request, queued under 20 a minute."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import SecretStr

from agent.storage.database import Database
from agent.storage.engine import Engine
from api.delivery.courier import Courier
from api.delivery.outbox import Outbox
from api.dingtalk.robot_webhook import (
    ROBOT_SENDS_PER_MINUTE,
    THROTTLE_PAUSE_SECONDS,
    RobotWebhookSender,
    notice_body,
)
from api.dingtalk.sender import SessionWebhookSender
from api.dingtalk.signature import compute_sign
from tests.fakes.servers import FakeDingTalk
from tests.store import sql

ROBOT_SECRET = "SEC-robot-secret"


@asynccontextmanager
async def courier_for(
    path: Path | Engine, fake: FakeDingTalk, secret: str | None = ROBOT_SECRET
) -> AsyncIterator[Courier]:
    db = Database(path)
    await db.open()
    async with httpx.AsyncClient() as http, SessionWebhookSender() as webhook:
        robot = RobotWebhookSender(
            http,
            oapi_base=fake.url,
            access_token=SecretStr("robot-access-token"),
            secret=SecretStr(secret) if secret else None,
        )
        try:
            yield Courier(outbox=Outbox(db), webhook=webhook, openapi=None, robot=robot)
        finally:
            await db.close()


def notices(path: Path | Engine) -> list[tuple[Any, ...]]:
    return sql(
        path, "SELECT state, attempts, next_attempt_at FROM outbox WHERE channel = 'robot' ORDER BY id"
    )


def test_each_notice_is_signed_with_a_fresh_timestamp(
    database_target: Path | Engine, fake_dingtalk: FakeDingTalk
) -> None:
    async def scenario() -> None:
        async with courier_for(database_target, fake_dingtalk) as courier:
            await courier.notify(notice_body("第一条通知"))
            await asyncio.sleep(0.005)
            await courier.notify(notice_body("## 第二条\n\n- 列表", title="周报", markdown=True))

    started_ms = int(time.time() * 1000)
    asyncio.run(scenario())
    ended_ms = int(time.time() * 1000)
    requests = fake_dingtalk.posts("/robot/send")
    assert len(requests) == 2
    timestamps = []
    for request in requests:
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
        assert query["access_token"] == "robot-access-token"
        assert query["sign"] == compute_sign(query["timestamp"], ROBOT_SECRET)
        assert started_ms <= int(query["timestamp"]) <= ended_ms  # signed when it was sent
        timestamps.append(query["timestamp"])
    assert timestamps[0] != timestamps[1]
    assert requests[0].json() == {"msgtype": "text", "text": {"content": "第一条通知"}}
    assert requests[1].json()["markdown"] == {"title": "周报", "text": "## 第二条\n\n- 列表"}
    assert [state for state, _, _ in notices(database_target)] == ["sent", "sent"]


def test_a_robot_without_a_secret_sends_unsigned(
    database_target: Path | Engine, fake_dingtalk: FakeDingTalk
) -> None:
    async def scenario() -> None:
        async with courier_for(database_target, fake_dingtalk, secret=None) as courier:
            await courier.notify(notice_body("关键词 通知"))

    asyncio.run(scenario())
    [request] = fake_dingtalk.posts("/robot/send")
    assert set(parse_qs(urlsplit(request.path).query)) == {"access_token"}


def test_more_than_twenty_a_minute_are_queued_not_sent_and_not_dropped(
    database_target: Path | Engine, fake_dingtalk: FakeDingTalk
) -> None:
    path = database_target

    async def burst() -> None:
        async with courier_for(path, fake_dingtalk) as courier:
            for i in range(ROBOT_SENDS_PER_MINUTE + 3):
                await courier.notify(notice_body(f"通知 {i}"))

    started = time.time()
    asyncio.run(burst())
    assert len(fake_dingtalk.posts("/robot/send")) == ROBOT_SENDS_PER_MINUTE
    rows = notices(path)
    waiting = [row for row in rows if row[0] == "pending"]
    assert len(waiting) == 3
    assert all(started + 55 < at < time.time() + 61 for _, _, at in waiting)  # when the minute is over

    # A minute later (the clock moved by rewriting the rows), the periodic check sends the rest, in order.
    sql(path, "UPDATE outbox SET updated_at = updated_at - 61 WHERE state = 'sent'")
    sql(path, "UPDATE outbox SET next_attempt_at = 0 WHERE state = 'pending'")

    async def later() -> None:
        async with courier_for(path, fake_dingtalk) as courier:
            await courier.send_due()

    asyncio.run(later())
    texts = [r.json()["text"]["content"] for r in fake_dingtalk.posts("/robot/send")]
    assert texts == [f"通知 {i}" for i in range(ROBOT_SENDS_PER_MINUTE + 3)]
    assert {row[0] for row in notices(path)} == {"sent"}


def test_throttled_by_dingtalk_the_notice_waits_ten_minutes_without_losing_an_attempt(
    database_target: Path | Engine, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.robot_errcodes.append(130101)
    path = database_target

    async def scenario() -> None:
        async with courier_for(path, fake_dingtalk) as courier:
            await courier.notify(notice_body("被限流"))
            await courier.notify(notice_body("排在后面"))

    started = time.time()
    asyncio.run(scenario())
    ended = time.time()
    assert len(fake_dingtalk.posts("/robot/send")) == 1  # not hammered: no quick retries when throttled
    rows = notices(path)
    assert [(state, attempts) for state, attempts, _ in rows] == [("pending", 0), ("pending", 0)]
    pause = THROTTLE_PAUSE_SECONDS  # ten minutes from when DingTalk said so
    assert all(started + pause <= at <= ended + pause for _, _, at in rows)
