"""The custom-robot webhook: proactive notices to the group the robot was added to.

`POST <DINGTALK_OAPI_BASE>/robot/send?access_token=…&timestamp=…&sign=…`, the signature recomputed for
every request (dingtalk-protocol.md). DingTalk allows 20 messages a minute per robot; the courier
queues to stay under that. The URL carries the token: never logged.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import SecretStr

from api.dingtalk.reply import encode_body
from api.dingtalk.sender import SendResult, read_webhook_answer, transport_failure
from api.dingtalk.signature import compute_sign

ROBOT_SENDS_PER_MINUTE = 20
THROTTLE_PAUSE_SECONDS = 600.0  # after 130101 DingTalk refuses the robot for about 10 minutes


def notice_body(text: str, *, title: str = "", markdown: bool = False) -> dict[str, Any]:
    if markdown:
        return {"msgtype": "markdown", "markdown": {"title": title or text[:20], "text": text}}
    return {"msgtype": "text", "text": {"content": text}}


class RobotWebhookSender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        oapi_base: str,
        access_token: SecretStr,
        secret: SecretStr | None,
    ) -> None:
        self._client = client
        self._url = f"{oapi_base.rstrip('/')}/robot/send"
        self._access_token = access_token
        self._secret = secret

    def _params(self) -> dict[str, str]:
        params = {"access_token": self._access_token.get_secret_value()}
        if self._secret is not None:  # a robot secured by keywords or IP only is sent unsigned
            timestamp = str(int(time.time() * 1000))
            params.update(timestamp=timestamp, sign=compute_sign(timestamp, self._secret.get_secret_value()))
        return params

    async def send(self, body: dict[str, Any]) -> SendResult:
        try:
            response = await self._client.post(
                self._url,
                params=self._params(),
                content=encode_body(body),
                headers={"Content-Type": "application/json; charset=utf-8"},
            )
        except (httpx.HTTPError, ValueError, TypeError) as exc:
            return transport_failure(exc)
        return read_webhook_answer(response)
