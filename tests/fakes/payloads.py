"""Realistic DingTalk callback bodies and signed headers (dingtalk-protocol.md samples)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from api.dingtalk.signature import compute_sign

_ids = itertools.count(1)


def callback(webhook: str, text: str = "你好", *, group: bool = False, **overrides: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    body: dict[str, Any] = {
        "conversationId": "cidGroupAbc/x+1==" if group else "cidqOPMaB7Gm2FdvF0qNaI4g==",
        "chatbotCorpId": "ding9f50b15bccd16741",
        "chatbotUserId": "$:LWCP_v1:$rhYEt+K6DS3bXvXqXihY/",
        "msgId": f"msgTest{next(_ids):06d}==",
        "senderNick": "张三",
        "isAdmin": True,
        "senderStaffId": "042217062297",
        "sessionWebhookExpiredTime": now + 90 * 60 * 1000,
        "createAt": now,
        "senderCorpId": "ding9f50b15bccd16741",
        "conversationType": "2" if group else "1",
        "senderId": "$:LWCP_v1:$Y5u1kO0ehyqD3uPHdFmyPA==",
        "sessionWebhook": webhook,
        "robotCode": "dingabcdefc6gk",
        "msgtype": "text",
        "text": {"content": f" {text}" if group else text},
    }
    if group:
        body.update(
            conversationTitle="测试群",
            isInAtList=True,
            atUsers=[{"dingtalkId": body["chatbotUserId"]}],
        )
    body.update(overrides)
    return body


def signed_headers(secret: str, timestamp_ms: int | None = None) -> dict[str, str]:
    ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    return {"timestamp": ts, "sign": compute_sign(ts, secret), "Content-Type": "application/json"}


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()
