"""Send a reply through a message's session webhook and read DingTalk's answer.

DingTalk reports errors as HTTP 200 with `errcode` != 0. The webhook URL is a credential: it is
never logged or put in an exception message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from api.dingtalk.reply import encode_body

log = logging.getLogger(__name__)

ERRCODE_MEANINGS: dict[int, str] = {
    300001: "session webhook expired or unknown (session 不存在); the OpenAPI send is the fallback",
    310000: "keywords, signature, timestamp or IP whitelist rejected (read errmsg)",
    130101: "sending too fast: DingTalk throttles a robot for about 10 minutes",
    460101: "message body too large (over 20,000 bytes)",
    400013: "the robot is not in this conversation any more",
}


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    errcode: int | None = None  # DingTalk's errcode when it answered
    status: int | None = None  # HTTP status when there was one
    detail: str = ""  # safe to log: no URL, no text


def errcode_meaning(errcode: int) -> str:
    return ERRCODE_MEANINGS.get(errcode, "see DingTalk's error code list")


class SessionWebhookSender:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, url: str, body: dict[str, Any]) -> SendResult:
        try:
            response = await self._client.post(
                url, content=encode_body(body), headers={"Content-Type": "application/json; charset=utf-8"}
            )
        except httpx.TimeoutException:
            return SendResult(False, detail="timed out")
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, TypeError) as exc:
            return SendResult(False, detail=f"transport error ({type(exc).__name__})")
        if response.status_code != 200:
            return SendResult(False, status=response.status_code, detail=f"HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            return SendResult(False, status=200, detail="answer is not JSON")
        errcode = answer.get("errcode", 0) if isinstance(answer, dict) else None
        if not isinstance(errcode, int):
            return SendResult(False, status=200, detail="answer has no numeric errcode")
        if errcode != 0:
            errmsg = str(answer.get("errmsg", ""))[:200]
            return SendResult(
                False,
                errcode=errcode,
                status=200,
                detail=f"errcode {errcode} ({errmsg}): {errcode_meaning(errcode)}",
            )
        return SendResult(True, errcode=0, status=200)
