"""Proactive notices from outside the service (`dingbot notify`), through the service's own outbox.

The notice is stored in the outbox at DATABASE_PATH and sent at once when the robot's 20-a-minute
window allows; otherwise a running service's periodic check sends it when the window opens.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from agent.settings.config import Settings
from agent.storage.database import Database
from api.delivery.courier import Courier
from api.delivery.outbox import Outbox, OutboxState
from api.dingtalk.robot_webhook import RobotWebhookSender, notice_body
from api.dingtalk.sender import SessionWebhookSender


@dataclass(frozen=True, slots=True)
class NoticeOutcome:
    state: OutboxState
    detail: str  # DingTalk's answer when not sent (safe to print: no token, no URL)
    next_attempt_at: float


async def send_notice(
    settings: Settings, text: str, *, title: str = "", markdown: bool = False
) -> NoticeOutcome:
    if settings.access_token is None:
        raise ValueError("ACCESS_TOKEN is not set: it is the custom robot's webhook token (access_token=…)")
    database = Database.for_settings(settings)
    await database.open()
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0)) as http:
            outbox = Outbox(database)
            robot = RobotWebhookSender(
                http,
                oapi_base=settings.dingtalk_oapi_base,
                access_token=settings.access_token,
                secret=settings.dingtalk_robot_secret or settings.secret,
            )
            webhook = SessionWebhookSender()  # unused by a notice (it goes to the robot), closed all the same
            courier = Courier(outbox=outbox, webhook=webhook, openapi=None, robot=robot)
            try:
                row_id = await courier.notify(notice_body(text, title=title, markdown=markdown))
            finally:
                await webhook.aclose()
            status = await outbox.status(row_id)
            assert status is not None
            return NoticeOutcome(*status)
    finally:
        await database.close()
