"""Post to a DingTalk webhook (a message's session webhook, or the custom robot's) and read the answer.

DingTalk reports errors as HTTP 200 with `errcode` != 0. Webhook URLs are credentials: never logged or
put in an exception message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from api.dingtalk.reply import encode_body

log = logging.getLogger(__name__)

SESSION_EXPIRED = 300001
SENDING_TOO_FAST = 130101

ERRCODE_MEANINGS: dict[int, str] = {
    SESSION_EXPIRED: "session webhook expired or unknown (session 不存在); the OpenAPI send is the fallback",
    310000: "keywords, signature, timestamp or IP whitelist rejected (read errmsg)",
    SENDING_TOO_FAST: "sending too fast: DingTalk throttles a robot for about 10 minutes",
    460101: "message body too large (over 20,000 bytes)",
    400013: "the robot is not in this conversation any more",
    -1: "DingTalk is busy; try again later",
}
RETRYABLE_ERRCODES = frozenset({SENDING_TOO_FAST, -1})


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    errcode: int | None = None  # DingTalk's errcode when it answered
    status: int | None = None  # HTTP status when there was one
    detail: str = ""  # safe to log: no URL, no text
    retryable: bool = False  # worth trying again later: timeout, transport, 5xx, 429, busy, throttled
    expired: bool = False  # the session webhook is gone: another route may still work
    # The request went out but its answer was lost (read timeout, dropped connection, 504): DingTalk may
    # have taken it. Retried later by the periodic check, never at once (architecture.md: delivery semantics).
    uncertain: bool = False

    @property
    def throttled(self) -> bool:
        return self.errcode == SENDING_TOO_FAST or self.status == 429


def errcode_meaning(errcode: int) -> str:
    return ERRCODE_MEANINGS.get(errcode, "see DingTalk's error code list")


# The whole request was sent and the answer did not come back.
_ANSWER_LOST = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def transport_failure(exc: Exception) -> SendResult:
    if isinstance(exc, _ANSWER_LOST):
        timed_out = isinstance(exc, httpx.TimeoutException)
        kind = "timed out waiting for the answer" if timed_out else "answer lost"
        return SendResult(False, detail=f"{kind} ({type(exc).__name__})", retryable=True, uncertain=True)
    if isinstance(exc, httpx.TimeoutException):
        return SendResult(False, detail=f"timed out ({type(exc).__name__})", retryable=True)
    # Network trouble passes; a URL or body that cannot be sent at all does not.
    retryable = isinstance(exc, httpx.TransportError)
    return SendResult(False, detail=f"transport error ({type(exc).__name__})", retryable=retryable)


def read_webhook_answer(response: httpx.Response) -> SendResult:
    """A webhook's answer: HTTP status first, then the errcode in the JSON body."""
    if response.status_code != 200:
        retryable = response.status_code >= 500 or response.status_code == 429
        return SendResult(
            False,
            status=response.status_code,
            detail=f"HTTP {response.status_code}",
            retryable=retryable,
            uncertain=response.status_code == 504,  # a gateway gave up waiting: it may have gone through
        )
    try:
        answer = response.json()
    except ValueError:
        return SendResult(False, status=200, detail="answer is not JSON", retryable=True)
    errcode = answer.get("errcode", 0) if isinstance(answer, dict) else None
    if not isinstance(errcode, int):
        return SendResult(False, status=200, detail="answer has no numeric errcode", retryable=True)
    if errcode != 0:
        errmsg = str(answer.get("errmsg", ""))[:200]
        return SendResult(
            False,
            errcode=errcode,
            status=200,
            detail=f"errcode {errcode} ({errmsg}): {errcode_meaning(errcode)}",
            retryable=errcode in RETRYABLE_ERRCODES,
            expired=errcode == SESSION_EXPIRED,
        )
    return SendResult(True, errcode=0, status=200)


class SessionWebhookSender:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, url: str, body: dict[str, Any]) -> SendResult:
        try:
            response = await self._client.post(
                url, content=encode_body(body), headers={"Content-Type": "application/json; charset=utf-8"}
            )
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, TypeError) as exc:
            return transport_failure(exc)
        return read_webhook_answer(response)
