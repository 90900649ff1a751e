"""Sends what the outbox holds, through the fallback chain, with retries that never lose a message.

A reply goes to its session webhook while that lives; once it has expired (by
`sessionWebhookExpiredTime`, or DingTalk's errcode 300001) it goes by the OpenAPI send when the app's
credentials are set. Timeouts, 5xx and throttling are retried: a couple of quick tries at once, then with
jittered exponential backoff from the periodic check. Anything else is logged with its meaning and the
row is marked failed. Proactive notices go through the custom-robot webhook, at most 20 a minute.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from enum import StrEnum
from typing import Any

from agent.observe import NoObserver, Observer, Problem
from agent.storage.connection import AlsoWrite
from api.delivery.outbox import Channel, Outbox, OutboxState, Outgoing
from api.dingtalk.cards import CardSender
from api.dingtalk.openapi import OpenApiSender
from api.dingtalk.robot_webhook import ROBOT_SENDS_PER_MINUTE, THROTTLE_PAUSE_SECONDS, RobotWebhookSender
from api.dingtalk.sender import SendResult, SessionWebhookSender
from api.metrics import Metrics

log = logging.getLogger(__name__)

QUICK_RETRY_DELAYS = (0.3, 1.0)  # seconds before the 2nd and 3rd immediate try (jittered)
MAX_SEND_ATTEMPTS = 10  # attempts before a row is given up (backoff 5 s … 900 s: about 35 minutes in all)
BACKOFF_CAP_SECONDS = 900.0
THROTTLED_WAIT_SECONDS = 60.0
CLAIM_SECONDS = 180.0  # default: a row being sent is not due elsewhere for this long (> any one send)
DUE_CONCURRENCY = 8  # replies the periodic check sends at once


def jittered(seconds: float) -> float:
    return seconds * random.uniform(0.5, 1.5)  # noqa: S311 - spreading retries, not cryptography


class Delivery(StrEnum):
    SENT = "sent"  # DingTalk accepted every part
    RETRYING = "retrying"  # stored, and retried by the periodic check
    FAILED = "failed"  # given up: the reason is logged


def _bound(
    send: Callable[[dict[str, Any]], Awaitable[SendResult]], body: dict[str, Any]
) -> Callable[[], Awaitable[SendResult]]:
    return lambda: send(body)


def undelivered(detail: str) -> Problem:
    """A reply given up for good: someone did not get an answer."""
    return Problem(
        "delivery",
        "replies not delivered",
        "回复发送失败",
        f"a reply was given up: {detail}",
        f"一条回复最终没有发出去：{detail}",
        "see the log lines of that message (its id is on each); `dingbot doctor` checks DingTalk settings",
        "查看该消息的日志（每行都带消息 id）；用 `dingbot doctor` 检查钉钉相关配置",
    )


class Courier:
    def __init__(
        self,
        *,
        outbox: Outbox,
        webhook: SessionWebhookSender,
        openapi: OpenApiSender | None,
        robot: RobotWebhookSender | None,
        cards: CardSender | None = None,
        metrics: Metrics | None = None,
        retry_base_seconds: float = 5.0,
        observer: Observer | None = None,
        claim_seconds: float = CLAIM_SECONDS,
    ) -> None:
        self._claim_seconds = claim_seconds  # a replica killed mid-send holds its row this long at most
        self._outbox = outbox
        self._webhook = webhook
        self._openapi = openapi
        self._robot = robot
        self._cards = cards
        self._metrics = metrics
        self._retry_base = retry_base_seconds
        self._sending: set[int] = set()  # rows being sent right now in this process
        self._due_lock = asyncio.Lock()
        self.pending = 0  # pending rows at the last check, for /metrics
        self.observer: Observer = observer or NoObserver()  # told when a reply is given up

    @property
    def claim_seconds(self) -> float:
        """How long a row is held for one send (`Outbox.store_reply` claims a reply's first part so)."""
        return self._claim_seconds

    def _still_claimed(self, row: Outgoing) -> bool:
        return row.claimed_until is not None and time.time() < row.claimed_until - self._claim_seconds / 2

    @property
    def can_notify(self) -> bool:
        return self._robot is not None

    def _count(self, result: SendResult, via: str) -> None:
        if self._metrics is not None:
            self._metrics.sent(result, via)

    async def _attempt(self, via: str, send: Callable[[], Awaitable[SendResult]]) -> SendResult:
        """One send with quick retries for what is worth retrying at once (not throttling)."""
        result = await send()
        self._count(result, via)
        for delay in QUICK_RETRY_DELAYS:
            if result.ok or not result.retryable or result.throttled or result.uncertain:
                break
            await asyncio.sleep(jittered(delay))
            result = await send()
            self._count(result, via)
        return result

    async def _send_reply(self, row: Outgoing) -> SendResult:
        route = row.route
        if route is None:
            return SendResult(False, detail="stored reply has no route")
        now_ms = int(time.time() * 1000)
        why = "session webhook expired (sessionWebhookExpiredTime passed)"
        if route.webhook_usable(now_ms):
            url = route.webhook
            result = await self._attempt("session_webhook", lambda: self._webhook.send(url, row.body))
            if not result.expired:
                return result
            why = result.detail
            route = replace(route, webhook_dead=True)
            await self._outbox.update_route(row.id, route)
        if self._openapi is None:
            return SendResult(
                False,
                detail=f"{why}; no other way to reply: set DINGTALK_CLIENT_ID and DINGTALK_CLIENT_SECRET "
                "for the OpenAPI fallback",
            )
        openapi, fallback_route = self._openapi, route
        log.info("reply %s/%d: %s; sending through the OpenAPI fallback", row.msg_id, row.part, why)
        return await self._attempt("openapi", lambda: openapi.send(fallback_route, row.body))

    async def _settle(self, row: Outgoing, result: SendResult, also: AlsoWrite | None = None) -> Delivery:
        label = f"{row.channel.value} {row.msg_id or row.id}/{row.part}"
        if result.ok:
            await self._outbox.mark_sent(row.id, also)
            return Delivery.SENT
        if result.retryable and row.attempts + 1 < MAX_SEND_ATTEMPTS:
            if result.throttled:
                wait = THROTTLED_WAIT_SECONDS
            else:
                wait = min(self._retry_base * 2**row.attempts, BACKOFF_CAP_SECONDS)
            wait = jittered(wait)
            log.warning("%s: not sent (%s); next try in %.1f s", label, result.detail, wait)
            await self._outbox.mark_retry(row.id, at=time.time() + wait, error=result.detail)
            return Delivery.RETRYING
        log.error("%s: given up after %d attempt(s): %s", label, row.attempts + 1, result.detail)
        await self._outbox.mark_failed(row.id, result.detail)
        if row.channel is Channel.REPLY:  # a failing notice (an alert itself) is not alerted about
            self.observer.report(undelivered(result.detail))
        return Delivery.FAILED

    async def deliver(self, rows: Iterable[Outgoing], also: AlsoWrite | None = None) -> Delivery:
        """Send a reply's stored parts in order. A part not sent holds back the parts after it. `also`
        rides in the transaction that marks the last part sent (when this call sends it)."""
        rows = list(rows)
        for index, stale in enumerate(rows):
            if stale.id in self._sending:
                return Delivery.RETRYING  # another task of this process is sending it
            self._sending.add(stale.id)
            try:
                # Claimed in the database (another process, or a copy read earlier, cannot send it too),
                # and re-read: attempts and route as they are now. A part claimed as it was stored (in
                # that transaction) is sent as it is while at least half of its claim is left.
                row = stale if self._still_claimed(stale) else None
                row = row or await self._outbox.claim(stale.id, self._claim_seconds, stale.claimed_until)
                if row is None:
                    state = await self._outbox.state_of(stale.id)
                    if state in (OutboxState.SENT, OutboxState.SKIPPED):
                        continue
                    return Delivery.FAILED if state is OutboxState.FAILED else Delivery.RETRYING
                if "card" in row.body:
                    carried = await self._finish_card(row)
                    if carried is None:
                        continue  # the card gave way: the plain parts after it carry the answer
                    return carried
                last = also if index == len(rows) - 1 else None
                outcome = await self._settle(row, await self._send_reply(row), last)
            finally:
                self._sending.discard(stale.id)
            if outcome is not Delivery.SENT:
                return outcome
        return Delivery.SENT

    async def _finish_card(self, row: Outgoing) -> Delivery | None:
        """Finish the AI card with the whole answer. None when the card cannot carry it (refused,
        throttled, no card): the plain parts stored after it are sent instead."""
        card, route = row.body["card"], row.route
        if self._cards is None or route is None or not route.card_id:
            await self._outbox.skip(row.id, "no card to finish")
            return None
        text, failed = str(card["text"]), bool(card["failed"])
        result, finalized = await self._cards.finish(
            route.card_id, text, failed=failed, finalized=bool(card.get("finalized"))
        )
        self._count(result, "card")
        if result.ok:
            await self._outbox.mark_card_done(row.id)  # and the plain parts skipped, in one step
            return Delivery.SENT
        if finalized:
            # The whole answer is in the card; only its status is missing. Never also send it plain.
            if result.retryable and row.attempts + 1 < MAX_SEND_ATTEMPTS:
                await self._outbox.update_body(row.id, {"card": {**card, "finalized": True}})
                return await self._settle(row, result)
            log.warning("reply %s: card shows the answer, its status not set (%s)", row.msg_id, result.detail)
            await self._outbox.mark_card_done(row.id)
            return Delivery.SENT
        if result.retryable and not result.throttled and row.attempts + 1 < MAX_SEND_ATTEMPTS:
            return await self._settle(row, result)
        log.warning("reply %s: card not finished (%s); sending plain messages", row.msg_id, result.detail)
        # Best effort, so the card does not spin beside the plain reply: the status call may still pass.
        self._count(await self._cards.set_status(route.card_id, text, failed=True), "card")
        await self._outbox.skip(row.id, f"card not finished: {result.detail}")
        return None

    async def notify(self, body: dict[str, Any]) -> int:
        """Queue a proactive notice for the custom-robot webhook and send what the rate allows.

        Returns the notice's outbox row id."""
        if self._robot is None:
            raise RuntimeError("ACCESS_TOKEN is not set: no custom-robot webhook to send notices to")
        row = await self._outbox.store_notice(body)
        await self._send_notices([row])  # this one only: queued ones are the periodic check's
        return row.id

    async def status(self, row_id: int) -> tuple[OutboxState, str, float] | None:
        """(state, last error, next attempt) of a stored reply or notice."""
        return await self._outbox.status(row_id)

    async def _send_notices(self, rows: Iterable[Outgoing]) -> None:
        robot = self._robot
        if robot is None:
            return
        for queued in rows:
            now = time.time()
            window = await self._outbox.sent_since(Channel.ROBOT, now - 60.0)
            if len(window) >= ROBOT_SENDS_PER_MINUTE:
                # Queued, not dropped: the next slot opens when the oldest send leaves the minute.
                await self._outbox.pause_channel(Channel.ROBOT, window[0] + 60.0)
                return
            row = await self._outbox.claim(queued.id, self._claim_seconds)
            if row is None:
                continue  # not due yet, sent, or being sent by another process
            result = await self._attempt("robot_webhook", _bound(robot.send, row.body))
            if result.throttled:
                log.warning("robot webhook throttled (130101): notices wait %.0f s", THROTTLE_PAUSE_SECONDS)
                await self._outbox.mark_retry(
                    row.id, at=now + THROTTLE_PAUSE_SECONDS, error=result.detail, count_attempt=False
                )
                await self._outbox.pause_channel(Channel.ROBOT, now + THROTTLE_PAUSE_SECONDS)
                return
            await self._settle(row, result)

    async def send_due(self) -> int:
        """Send every pending row whose time has come (the periodic check, and at startup).

        Returns how many replies were completed."""
        async with self._due_lock:
            limit = asyncio.Semaphore(DUE_CONCURRENCY)

            async def send(parts: list[Outgoing]) -> bool:
                if any(row.id in self._sending for row in parts):
                    return False  # a worker is sending this reply right now
                async with limit:
                    return await self.deliver(parts) is Delivery.SENT

            sent = await asyncio.gather(*(send(parts) for parts in await self._outbox.due_replies()))
            await self._send_notices(await self._outbox.due_notices())
            self.pending = await self._outbox.count(OutboxState.PENDING)
            return sum(sent)
