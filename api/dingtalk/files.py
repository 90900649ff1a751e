"""Pictures and files people send the robot, fetched through DingTalk's robot file API.

`POST /v1.0/robot/messageFiles/download {"downloadCode", "robotCode"}` with the app's access token answers
`{"downloadUrl"}`: a short-lived URL the bytes are then streamed from (research: the open platform's
"下载机器人接收消息的文件内容", and the SDKs built on it). The bytes are streamed with a cap
(MEDIA_MAX_BYTES: a larger file is refused from its Content-Length, or as soon as the cap is passed, never
read whole), a time limit (MEDIA_TIMEOUT_SECONDS) and only from an http(s) URL DingTalk's API returned
(a redirect from it is followed only to https, at most MAX_REDIRECTS times).
Nothing is written to disk; no code, URL or token is ever logged.

In mock mode without app credentials, a message whose session webhook is on this machine (a local tool
such as `dingbot simulate` playing DingTalk, which invariant 4 already lets the service reply to) has its
files fetched from that same origin's file API, without a token: local tools need no set-up.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

from agent.media.problems import MediaProblem, MediaReason
from agent.messages import IncomingMessage, Media
from api.dingtalk.openapi import AccessTokens, call_openapi, error_detail
from api.dingtalk.reply import is_loopback_host
from api.dingtalk.sender import SendResult

CHUNK_BYTES = 64 * 1024
MAX_REDIRECTS = 3


class DingTalkFiles:
    """The MediaSource of the DingTalk channel (agent/media/reader.py)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        tokens: AccessTokens | None,
        *,
        api_base: str,
        robot_code: str,
        timeout_seconds: float,
    ) -> None:
        self._client = client
        self._tokens = tokens
        self._url = f"{api_base.rstrip('/')}/v1.0/robot/messageFiles/download"
        self._robot_code = robot_code
        self._timeout = timeout_seconds

    async def fetch(self, message: IncomingMessage, media: Media, max_bytes: int) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                url = await self._download_url(message, media)
                return await self._stream(url, max_bytes, media.name)
        except TimeoutError:
            raise MediaProblem(
                MediaReason.UNREACHABLE, f"download took over {self._timeout:g} s", name=media.name
            ) from None

    async def _download_url(self, message: IncomingMessage, media: Media) -> str:
        robot_code = message.bot_id if message.bot_id and message.bot_id != "normal" else self._robot_code
        payload = {"downloadCode": media.code, "robotCode": robot_code}
        if self._tokens is None:  # a local stand-in for DingTalk (mock mode)
            try:
                response: httpx.Response | SendResult = await self._client.post(self._url, json=payload)
            except httpx.HTTPError as exc:
                response = SendResult(False, detail=f"transport error ({type(exc).__name__})", retryable=True)
        else:
            response = await call_openapi(self._client, self._tokens, "POST", self._url, payload)
        if isinstance(response, SendResult):  # no token, or the request did not get through
            reason = MediaReason.UNREACHABLE if response.retryable else MediaReason.NO_CREDENTIALS
            raise MediaProblem(reason, f"file API: {response.detail}", name=media.name)
        status = response.status_code
        if status != 200:
            reason = MediaReason.EXPIRED if status in (400, 404, 410) else MediaReason.UNREACHABLE
            raise MediaProblem(reason, f"file API {error_detail(response)}", name=media.name)
        try:
            url = response.json()["downloadUrl"]
        except (ValueError, KeyError, TypeError):
            url = None
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise MediaProblem(
                MediaReason.UNREACHABLE, "file API answered no http(s) downloadUrl", name=media.name
            )
        return str(url)

    async def _stream(self, url: str, max_bytes: int, name: str) -> bytes:
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with self._client.stream("GET", url, timeout=self._timeout) as response:
                    if response.is_redirect:  # followed only to https: never to a plain-http address
                        url = str(response.url.join(response.headers.get("location", "")))
                        if urlsplit(url).scheme != "https":
                            raise MediaProblem(
                                MediaReason.UNREACHABLE, "download redirected off https", name=name
                            )
                        continue
                    return await self._read(response, max_bytes, name)
            raise MediaProblem(MediaReason.UNREACHABLE, "download redirected too often", name=name)
        except httpx.HTTPError as exc:
            raise MediaProblem(
                MediaReason.UNREACHABLE, f"download failed ({type(exc).__name__})", name=name
            ) from None

    @staticmethod
    async def _read(response: httpx.Response, max_bytes: int, name: str) -> bytes:
        if response.status_code in (401, 403, 404, 410):
            raise MediaProblem(
                MediaReason.EXPIRED, f"download answered HTTP {response.status_code}", name=name
            )
        if response.status_code != 200:
            raise MediaProblem(
                MediaReason.UNREACHABLE, f"download answered HTTP {response.status_code}", name=name
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise MediaProblem(MediaReason.TOO_LARGE, f"{declared} bytes declared", name=name)
        data = bytearray()
        async for chunk in response.aiter_bytes(CHUNK_BYTES):
            data += chunk
            if len(data) > max_bytes:
                raise MediaProblem(MediaReason.TOO_LARGE, f"over {max_bytes} bytes", name=name)
        return bytes(data)


class ChannelFiles:
    """The service's MediaSource: DingTalk's file API with the app's credentials; in mock mode without
    them, the file API of a session webhook's own origin when that is on this machine."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        dingtalk: DingTalkFiles | None,
        *,
        mock_mode: bool,
        timeout_seconds: float,
    ) -> None:
        self._client = client
        self._dingtalk = dingtalk
        self._mock_mode = mock_mode
        self._timeout = timeout_seconds

    async def fetch(self, message: IncomingMessage, media: Media, max_bytes: int) -> bytes:
        if self._dingtalk is not None:
            return await self._dingtalk.fetch(message, media, max_bytes)
        parts = urlsplit(message.reply_url)
        if not (self._mock_mode and parts.scheme == "http" and is_loopback_host(parts.hostname or "")):
            raise MediaProblem(
                MediaReason.NO_CREDENTIALS, "DINGTALK_CLIENT_ID / DINGTALK_CLIENT_SECRET not set"
            )
        local = DingTalkFiles(
            self._client,
            None,
            api_base=f"http://{parts.netloc}",
            robot_code="",
            timeout_seconds=self._timeout,
        )
        return await local.fetch(message, media, max_bytes)
