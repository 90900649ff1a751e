"""From an accepted message to a delivered reply, in the background, in order per person.

The callback handler only claims the msgId and schedules; the model and the send happen here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from agent.assistant import Assistant
from agent.messages import IncomingMessage
from api.dingtalk.reply import build_reply_bodies
from api.dingtalk.sender import SessionWebhookSender
from api.inbox import Inbox, InboxState
from api.metrics import Metrics

log = logging.getLogger(__name__)


class Dispatcher:
    """Runs at most `workers` messages at once; messages of one conversation and speaker run in order."""

    def __init__(
        self,
        *,
        assistant: Assistant,
        sender: SessionWebhookSender,
        inbox: Inbox,
        workers: int,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._assistant = assistant
        self._sender = sender
        self._inbox = inbox
        self._slots = asyncio.Semaphore(workers)
        self._lanes: dict[str, asyncio.Lock] = {}
        self._lane_users: defaultdict[str, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def accept(self, message: IncomingMessage) -> bool:
        """Claim the message; False for a msgId already seen."""
        return await self._inbox.claim(message.message_id)

    def schedule(self, message: IncomingMessage) -> None:
        task = asyncio.create_task(self._run(message), name=f"message-{message.message_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, message: IncomingMessage) -> None:
        lane_key = self._assistant.history_scope(message)
        lane = self._lanes.setdefault(lane_key, asyncio.Lock())
        self._lane_users[lane_key] += 1
        try:
            async with lane, self._slots:
                await self._process(message)
        except asyncio.CancelledError:
            # Stopped mid-answer (shutdown): a redelivery of this msgId must be answered, not dropped.
            await self._inbox.mark(message.message_id, InboxState.FAILED)
            raise
        except Exception:
            log.exception("message %s: unexpected failure", message.message_id)
            await self._inbox.mark(message.message_id, InboxState.FAILED)
        finally:
            self._lane_users[lane_key] -= 1
            if self._lane_users[lane_key] == 0:
                del self._lane_users[lane_key], self._lanes[lane_key]

    async def _process(self, message: IncomingMessage) -> None:
        started = time.perf_counter()
        reply = await self._assistant.reply(message)
        for body in build_reply_bodies(message, reply):
            result = await self._sender.send(message.reply_url, body)
            if self._metrics is not None:
                self._metrics.sent(result)
            if not result.ok:
                break
        elapsed = (time.perf_counter() - started) * 1000
        if not result.ok:
            log.warning(
                "message %s: reply not delivered after %.0f ms: %s",
                message.message_id,
                elapsed,
                result.detail,
            )
            await self._inbox.mark(message.message_id, InboxState.FAILED)
            return
        log.info("message %s: replied in %.0f ms", message.message_id, elapsed)
        await self._assistant.remember(message, reply)
        await self._inbox.mark(message.message_id, InboxState.DONE)

    async def drain(self, grace_seconds: float) -> None:
        """On shutdown: let in-flight messages finish for up to `grace_seconds`, then cancel them."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, still = await asyncio.wait(pending, timeout=grace_seconds)
        for task in still:
            task.cancel()
        if still:
            log.warning("shutdown: %d message(s) cancelled before their reply", len(still))
            await asyncio.gather(*still, return_exceptions=True)
