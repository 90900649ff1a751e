"""DingTalk Stream protocol pieces, without I/O state: the gateway's `connections/open` call and its
answer, frame parsing and acks. The connection itself (state, reconnects) is api/dingtalk/stream.py.

Nothing here puts the client secret, the ticket or the endpoint's query into an error's text: the
text of a `GatewayError` goes to /readyz and the log as it is.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

OPEN_PATH = "/v1.0/gateway/connections/open"
BOT_MESSAGE_TOPIC = "/v1.0/im/bot/messages/get"
SUBSCRIPTIONS = [{"type": "CALLBACK", "topic": BOT_MESSAGE_TOPIC}]
CALLBACK_ACK_DATA = json.dumps({"response": None})
EVENT_ACK_DATA = json.dumps({"status": "SUCCESS", "message": "OK"})


class GatewayError(Exception):
    """Opening a Stream connection failed. `detail` is one line for /readyz and the log, with no secret;
    `kind` labels the metric (credentials, gateway, network, websocket); `credentials` asks for the
    longer backoff (retrying sooner cannot fix a wrong AppKey/AppSecret)."""

    def __init__(self, kind: str, detail: str, *, credentials: bool = False) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.credentials = credentials


@dataclass(frozen=True)
class Ticket:
    endpoint: str  # ws:// or wss:// URL from the gateway, without the ticket
    ticket: str  # single use

    @property
    def url(self) -> str:
        """`endpoint?ticket=…` (the ticket URL-encoded; an existing query is kept). Never log it."""
        parts = urlsplit(self.endpoint)
        query = f"{parts.query}&" if parts.query else ""
        return urlunsplit(parts._replace(query=f"{query}ticket={quote(self.ticket, safe='')}"))

    @property
    def where(self) -> str:
        """The endpoint without its query: safe to log."""
        return safe_url(self.endpoint)


def safe_url(url: str) -> str:
    """scheme://host[:port]/path: no user info, no query (where a ticket would be)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def local_ip(api_base: str) -> str:
    """The address this host uses to reach the gateway (a UDP 'connect' sends nothing). Blocking (it
    may resolve a name): run it in a thread. Informational for DingTalk, so it never fails."""
    parts = urlsplit(api_base)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((parts.hostname or "127.0.0.1", port))
            return str(probe.getsockname()[0])
    except Exception:  # no route, IPv6 only, a name that does not resolve: say loopback
        return "127.0.0.1"


def _refusal(response: httpx.Response) -> str:
    """`HTTP 401 <code>` with the gateway's error code when it sent one (codes are safe to show)."""
    code = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code = " " + "".join(ch for ch in body["code"][:60] if ch.isalnum() or ch in "._-")
    return f"HTTP {response.status_code}{code}"


async def open_connection(
    http: httpx.AsyncClient,
    *,
    api_base: str,
    client_id: str,
    client_secret: str,
    user_agent: str,
    local_address: str,
    request_seconds: float,
) -> Ticket:
    """POST connections/open; the endpoint and a fresh ticket, or a GatewayError that says what to fix."""
    url = api_base.rstrip("/") + OPEN_PATH
    where = safe_url(api_base)
    body = {
        "clientId": client_id,
        "clientSecret": client_secret,
        "subscriptions": SUBSCRIPTIONS,
        "ua": user_agent,
        "localIp": local_address,
    }
    try:
        response = await http.post(
            url, json=body, headers={"Accept": "application/json"}, timeout=request_seconds
        )
    except httpx.HTTPError as exc:
        raise GatewayError("network", f"cannot reach the gateway at {where} ({type(exc).__name__})") from None
    status = response.status_code
    if status in (401, 403):
        raise GatewayError(
            "credentials",
            f"gateway refused the credentials ({_refusal(response)}): check DINGTALK_CLIENT_ID/"
            "DINGTALK_CLIENT_SECRET (the app's AppKey/AppSecret)",
            credentials=True,
        )
    if 400 <= status < 500 and status != 429:
        raise GatewayError(
            "credentials",
            f"gateway refused the request ({_refusal(response)}): check DINGTALK_CLIENT_ID/"
            "DINGTALK_CLIENT_SECRET and that the app's robot uses Stream mode",
            credentials=True,
        )
    if status != 200:
        raise GatewayError("gateway", f"gateway at {where} answered {_refusal(response)}")
    try:
        answer: Any = response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise GatewayError("gateway", f"gateway answer is not JSON (HTTP 200, {kind})") from None
    endpoint = answer.get("endpoint") if isinstance(answer, dict) else None
    ticket = answer.get("ticket") if isinstance(answer, dict) else None
    if not isinstance(endpoint, str) or not endpoint or not isinstance(ticket, str) or not ticket:
        raise GatewayError("gateway", "gateway answer has no endpoint or no ticket (HTTP 200)")
    if urlsplit(endpoint).scheme not in ("ws", "wss") or not urlsplit(endpoint).hostname:
        raise GatewayError("gateway", "gateway endpoint is not a ws:// or wss:// URL")
    return Ticket(endpoint, ticket)


@dataclass(frozen=True)
class Frame:
    type: str  # SYSTEM, EVENT, CALLBACK (or whatever the gateway sent)
    topic: str
    message_id: str
    data: str  # a JSON string (the gateway's `data`, re-encoded when it was not a string)

    @property
    def metric_type(self) -> str:
        return self.type.lower() if self.type in ("SYSTEM", "EVENT", "CALLBACK") else "other"


def parse_frame(raw: str | bytes) -> Frame | None:
    """A frame from the gateway, or None when it is not a JSON object."""
    try:
        frame = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(frame, dict):
        return None
    headers = frame.get("headers")
    headers = headers if isinstance(headers, dict) else {}
    data = frame.get("data")
    if data is None:
        data = ""
    elif not isinstance(data, str):
        data = json.dumps(data, ensure_ascii=False)
    return Frame(
        type=str(frame.get("type") or ""),
        topic=str(headers.get("topic") or ""),
        message_id=str(headers.get("messageId") or ""),
        data=data,
    )


def ack_for(frame: Frame) -> str:
    """The answer to a frame: code 200 with its messageId; SYSTEM frames (ping) get their data echoed."""
    if frame.type == "SYSTEM":
        data = frame.data
    elif frame.type == "EVENT":
        data = EVENT_ACK_DATA
    else:
        data = CALLBACK_ACK_DATA
    return json.dumps(
        {
            "code": 200,
            "headers": {"contentType": "application/json", "messageId": frame.message_id},
            "message": "OK",
            "data": data,
        },
        ensure_ascii=False,
    )
