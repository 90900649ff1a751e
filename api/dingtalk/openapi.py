"""The OpenAPI robot send: the fallback when a session webhook has expired (dingtalk-protocol.md).

Groups: `POST /v1.0/robot/groupMessages/send`; one-to-one: `POST /v1.0/robot/oToMessages/batchSend`;
both with `msgKey` sampleText/sampleMarkdown and `msgParam` as a JSON string, authorised by an access
token (`x-acs-dingtalk-access-token`) fetched with the app's AppKey/AppSecret and cached. OpenAPI errors
come back as HTTP 4xx/5xx with `{"code", "message"}`. The token and the secret are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
from pydantic import SecretStr

from api.dingtalk.reply import Route
from api.dingtalk.sender import SendResult, transport_failure

log = logging.getLogger(__name__)

TOKEN_REFRESH_MARGIN_SECONDS = 300.0  # refresh a few minutes before DingTalk's expiry


class TokenError(Exception):
    """No access token: the detail is safe to log and says what to fix."""

    def __init__(self, detail: str, *, retryable: bool) -> None:
        super().__init__(detail)
        self.retryable = retryable


def error_detail(response: httpx.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(answer, dict):
        return f"HTTP {response.status_code}"
    code, message = str(answer.get("code", ""))[:80], str(answer.get("message", ""))[:200]
    return f"HTTP {response.status_code} {code}: {message}".rstrip(": ")


class AccessTokens:
    """The app's OpenAPI access token, cached until shortly before it expires; one fetch at a time."""

    def __init__(self, client: httpx.AsyncClient, *, api_base: str, client_id: str, client_secret: SecretStr):
        self._client = client
        self._url = f"{api_base.rstrip('/')}/v1.0/oauth2/accessToken"
        self._client_id = client_id
        self._client_secret = client_secret
        self._token = ""
        self._valid_until = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def invalidate(self) -> None:
        self._token, self._valid_until = "", 0.0

    async def get(self) -> str:
        async with self._lock:
            if self._token and time.monotonic() < self._valid_until:
                return self._token
            try:
                response = await self._client.post(
                    self._url,
                    json={"appKey": self._client_id, "appSecret": self._client_secret.get_secret_value()},
                )
            except httpx.HTTPError as exc:
                raise TokenError(f"access token: {transport_failure(exc).detail}", retryable=True) from None
            self.fetches += 1
            if response.status_code != 200:
                retryable = response.status_code >= 500 or response.status_code == 429
                hint = "" if retryable else " (check DINGTALK_CLIENT_ID / DINGTALK_CLIENT_SECRET)"
                raise TokenError(f"access token refused: {error_detail(response)}{hint}", retryable=retryable)
            try:
                answer = response.json()
                token = str(answer["accessToken"])
                lifetime = float(answer.get("expireIn", 7200))
            except (ValueError, KeyError, TypeError):
                raise TokenError("access token answer has no accessToken", retryable=True) from None
            self._token = token
            self._valid_until = time.monotonic() + max(lifetime - TOKEN_REFRESH_MARGIN_SECONDS, 60.0)
            return token


async def call_openapi(
    client: httpx.AsyncClient, tokens: AccessTokens, method: str, url: str, payload: dict[str, Any]
) -> httpx.Response | SendResult:
    """One OpenAPI request with the app's access token; after a 401 once more with a fresh token.
    The response, or a SendResult saying why there was none (no token, transport failure)."""
    for attempt in (1, 2):
        try:
            token = await tokens.get()
        except TokenError as exc:
            return SendResult(False, detail=str(exc), retryable=exc.retryable)
        try:
            response = await client.request(
                method, url, json=payload, headers={"x-acs-dingtalk-access-token": token}
            )
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        if response.status_code == 401 and attempt == 1:
            tokens.invalidate()
            continue
        return response
    raise AssertionError("unreachable")


def http_failure(response: httpx.Response, label: str) -> SendResult | None:
    """An OpenAPI answer other than 200 as a SendResult (5xx and 429 worth retrying); None for a 200."""
    status = response.status_code
    if status == 200:
        return None
    retryable = status >= 500 or status == 429
    return SendResult(False, status=status, detail=f"{label} {error_detail(response)}", retryable=retryable)


def openapi_message(body: dict[str, Any]) -> tuple[str, str]:
    """A session-webhook body as OpenAPI's (msgKey, msgParam JSON string)."""
    if body.get("msgtype") == "markdown":
        markdown = body.get("markdown", {})
        param = {"title": markdown.get("title", ""), "text": markdown.get("text", "")}
        return "sampleMarkdown", json.dumps(param, ensure_ascii=False)
    return "sampleText", json.dumps({"content": body.get("text", {}).get("content", "")}, ensure_ascii=False)


class OpenApiSender:
    def __init__(self, client: httpx.AsyncClient, tokens: AccessTokens, *, api_base: str) -> None:
        self._client = client
        self._tokens = tokens
        self._base = api_base.rstrip("/")

    def request_for(self, route: Route, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | str:
        """(url, JSON) of the send, or why this route cannot be sent to."""
        if not route.robot_code:
            return "no robotCode for the OpenAPI send (set DINGTALK_ROBOT_CODE or DINGTALK_CLIENT_ID)"
        msg_key, msg_param = openapi_message(body)
        common = {"robotCode": route.robot_code, "msgKey": msg_key, "msgParam": msg_param}
        if route.is_group:
            if not route.conversation_id:
                return "the group has no conversation id for the OpenAPI send"
            return f"{self._base}/v1.0/robot/groupMessages/send", {
                **common,
                "openConversationId": route.conversation_id,
            }
        if not route.user_id:
            return "the person has no staff id (an external user): the OpenAPI one-to-one send needs one"
        return f"{self._base}/v1.0/robot/oToMessages/batchSend", {**common, "userIds": [route.user_id]}

    async def send(self, route: Route, body: dict[str, Any]) -> SendResult:
        request = self.request_for(route, body)
        if isinstance(request, str):
            return SendResult(False, detail=request)
        url, payload = request
        response = await call_openapi(self._client, self._tokens, "POST", url, payload)
        return response if isinstance(response, SendResult) else self._read(response)

    @staticmethod
    def _read(response: httpx.Response) -> SendResult:
        failure = http_failure(response, "OpenAPI")
        if failure is not None:
            return failure
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if isinstance(answer, dict):
            if answer.get("invalidStaffIdList"):
                return SendResult(
                    False, status=200, detail="OpenAPI: the staff id is not valid for this robot"
                )
            if answer.get("flowControlledStaffIdList"):
                return SendResult(False, status=429, detail="OpenAPI: flow-controlled, later", retryable=True)
        return SendResult(True, status=200)
