"""Post to a DingTalk webhook (a message's session webhook, or the custom robot's) and read the answer.

DingTalk reports errors as HTTP 200 with `errcode` != 0. Webhook URLs are credentials: never logged or
put in an exception message.

The session webhook carries every reply, so its sender is on aiohttp: on this project's machines a POST
costs 0.39 ms of CPU there and 1.31 ms with httpx (bench/throughput.py's note in docs/benchmarks.md). The
other senders (OpenAPI, cards, the custom robot, the file API) are not on that path and stay on httpx.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
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
    return webhook_answer(response.status_code, response.content)


def webhook_answer(status: int, content: bytes) -> SendResult:
    """A webhook's answer from its HTTP status and body."""
    if status != 200:
        retryable = status >= 500 or status == 429
        return SendResult(
            False,
            status=status,
            detail=f"HTTP {status}",
            retryable=retryable,
            uncertain=status == 504,  # a gateway gave up waiting: it may have gone through
        )
    try:
        answer = json.loads(content)
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


# aiohttp's names for the same cases as transport_failure's: the request went out and its answer was lost;
# the connection never came up (nothing was sent); a URL that cannot be sent to at all.
_AIOHTTP_ANSWER_LOST = (
    aiohttp.SocketTimeoutError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,
    TimeoutError,  # asyncio's, from a timeout without a phase
)
_AIOHTTP_NOT_SENT = (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError)


def aiohttp_failure(exc: BaseException) -> SendResult:
    name = type(exc).__name__
    if isinstance(exc, _AIOHTTP_NOT_SENT):
        kind = "timed out" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "transport error"
        return SendResult(False, detail=f"{kind} ({name})", retryable=True)
    if isinstance(exc, _AIOHTTP_ANSWER_LOST):
        timed_out = isinstance(exc, TimeoutError)  # aiohttp's timeouts are TimeoutErrors too
        kind = "timed out waiting for the answer" if timed_out else "answer lost"
        return SendResult(False, detail=f"{kind} ({name})", retryable=True, uncertain=True)
    if isinstance(exc, aiohttp.InvalidURL | ValueError | TypeError):
        return SendResult(False, detail=f"transport error ({name})", retryable=False)
    # A connection dropped mid-way (ClientOSError): it may have been taken, so not retried at once.
    return SendResult(False, detail=f"answer lost ({name})", retryable=True, uncertain=True)


class SessionWebhookSender:
    """Posts replies to session webhooks on one aiohttp session (keep-alive, made on first use in the
    running loop; `aclose` ends it). Timeouts as the service's httpx client: `connect_timeout` to connect,
    `timeout` for each read and for a free connection."""

    def __init__(self, timeout: float = 10.0, *, connect_timeout: float = 5.0) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=connect_timeout, sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                trust_env=True,  # HTTP(S)_PROXY and NO_PROXY, as httpx reads them
                connector=aiohttp.TCPConnector(limit=100),
            )
        return self._session

    async def send(self, url: str, body: dict[str, Any]) -> SendResult:
        try:
            async with self._client().post(
                url,
                data=encode_body(body),
                headers=_JSON,
                allow_redirects=False,  # as httpx: never follow
            ) as response:
                content = await response.read()
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as exc:
            return aiohttp_failure(exc)
        return webhook_answer(response.status, content)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> SessionWebhookSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


_JSON = {"Content-Type": "application/json; charset=utf-8"}
