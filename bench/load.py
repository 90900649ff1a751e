"""The load side of the ack-latency bench: signed DingTalk callbacks, the client endpoints, pacing,
and the checks on the service and the fake webhook once the load is over."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from api.dingtalk.signature import compute_sign
from bench.settings import PEOPLE

EMPTY_ACK = {"msgtype": "empty"}


def callback_body(n: int, webhook_base: str, run_id: str, *, text: str | None = None) -> bytes:
    """A one-to-one text callback as DingTalk sends it (tests/fakes/payloads.py), for person n % PEOPLE.

    `text` replaces the default message text (bench/delivery.py puts a per-message token in it)."""
    now = int(time.time() * 1000)
    person = n % PEOPLE
    body = {
        "conversationId": f"cidBench{person:04d}{run_id}==",
        "chatbotCorpId": "ding9f50b15bccd16741",
        "chatbotUserId": "$:LWCP_v1:$rhYEt+K6DS3bXvXqXihY/",
        "msgId": f"msgBench{run_id}{n:07d}==",
        "senderNick": f"测试{person:02d}",
        "isAdmin": False,
        "senderStaffId": f"bench{person:04d}",
        "sessionWebhookExpiredTime": now + 90 * 60 * 1000,
        "createAt": now,
        "senderCorpId": "ding9f50b15bccd16741",
        "conversationType": "1",
        "senderId": f"$:LWCP_v1:$bench{person:04d}{run_id}==",
        "sessionWebhook": f"{webhook_base}/robot/sendBySession?session={n}",
        "robotCode": "dingbenchrobot",
        "msgtype": "text",
        "text": {"content": f"你好，这是第 {n} 条基准消息" if text is None else text},
    }
    return json.dumps(body, ensure_ascii=False).encode()


def signed_headers(secret: str) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000))
    return {
        "timestamp": timestamp,
        "sign": compute_sign(timestamp, secret),
        "Content-Type": "application/json",
    }


@dataclass
class Endpoint:
    name: str
    url: str
    client: httpx.Client
    latencies_ms: list[float] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)  # non-200 answers, odd bodies, transport errors
    sent: int = 0

    def send(self, body: bytes, headers: dict[str, str], *, record: bool) -> None:
        self.sent += 1
        started_ns = time.perf_counter_ns()
        try:
            response = self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.problems[f"transport error {type(exc).__name__}"] += 1
            return
        elapsed_ms = (time.perf_counter_ns() - started_ns) / 1e6
        if record:
            self.latencies_ms.append(elapsed_ms)
        problem = ack_problem(response)
        if problem:
            self.problems[problem] += 1


def ack_problem(response: httpx.Response) -> str:
    """What is wrong with a callback's answer ("" for DingHook's ack: 200 `{"msgtype": "empty"}`)."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    if response.content:
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if answer != EMPTY_ACK:
            return "200 with a body other than {'msgtype': 'empty'}"
    return ""


class Pacer:
    """Sequential by default; with a rate, one request every 1/rate s (no catch-up bursts when late)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.perf_counter()

    def wait(self) -> None:
        if not self._interval:
            return
        now = time.perf_counter()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(self._next + self._interval, time.perf_counter())


def wait_for_replies(webhook_base: str, expected: int, timeout: float) -> tuple[dict[str, int], float]:
    started = time.monotonic()
    snapshot = {"count": -1, "distinct_sessions": -1}
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                snapshot = client.get(f"{webhook_base}/count").json()
            waited = time.monotonic() - started
            if snapshot["count"] >= expected or waited >= timeout:
                return snapshot, waited
            time.sleep(0.1)


def in_flight(service_base: str) -> int | None:
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        try:
            return int(client.get(f"{service_base}/healthz").json()["in_flight"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
