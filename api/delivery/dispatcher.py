"""From an accepted message to a delivered reply, in the background, in order per person.

The callback handler only stores (claims) the message and schedules it; the model call, storing the reply
in the outbox and the send happen here. Messages left unfinished by a crash are resumed from the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import replace
from typing import Any

from agent.assistant import Assistant
from agent.errors import ModelErrorKind
from agent.messages import IncomingMessage, Reply, message_to_json
from agent.observe import current_message_id
from agent.storage.health import StorageError
from api.delivery.courier import Courier, Delivery
from api.delivery.inbox import Inbox, InboxState, Unfinished
from api.delivery.outbox import Outbox
from api.dingtalk.cards import CardSender, CardStream
from api.dingtalk.reply import REPLY_MAX_BYTES, Route, build_reply_bodies

log = logging.getLogger(__name__)
# Replies sent at once. WORKERS bounds the answers being made, not the sends; the session webhook's client
# keeps at most 100 connections and counts the wait for one against its connect timeout.
SENDS_AT_ONCE = 64


class Dispatcher:
    """Runs at most `workers` messages at once; messages of one conversation and speaker run in order."""

    def __init__(
        self,
        *,
        assistant: Assistant,
        inbox: Inbox,
        outbox: Outbox,
        courier: Courier,
        workers: int,
        default_robot_code: str = "",
        cards: CardSender | None = None,
        answer_deadline_seconds: float = 600.0,
    ) -> None:
        self._assistant = assistant
        self._inbox = inbox
        self._outbox = outbox
        self._courier = courier
        self._default_robot_code = default_robot_code
        self._cards = cards  # AI cards: answers stream into a card (DINGTALK_CARD_TEMPLATE_ID)
        self._deadline = answer_deadline_seconds  # the watchdog: an answer never takes longer
        self._slots = asyncio.Semaphore(workers)
        self._sends = asyncio.Semaphore(SENDS_AT_ONCE)  # within the HTTP client's pool of connections
        self._lanes: dict[str, asyncio.Lock] = {}
        self._lane_users: defaultdict[str, int] = defaultdict(int)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._revivals: set[asyncio.Task[None]] = set()
        self._resumed_at = 0.0  # when `resume` last read the inbox (announced() compares claims with it)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def accept(self, message: IncomingMessage) -> bool:
        """Store and claim the message; False for a msgId already seen."""
        return await self._inbox.claim(message)

    def schedule(self, message: IncomingMessage) -> None:
        msg_id = message.message_id
        if msg_id in self._tasks:
            return  # already running here
        task = asyncio.create_task(self._run(message), name=f"message-{msg_id}")
        self._tasks[msg_id] = task
        task.add_done_callback(self._forget_task)

    def announced(self, message: IncomingMessage, claimed_at: float) -> asyncio.Task[None] | None:
        """A message the acking process claimed at `claimed_at` (api/front/). Scheduled at once, unless a
        resume ran since the claim or the claim is old enough for another replica to take it: then only if
        the row is still as claimed (the inbox's compare-and-set), so a resume and this cannot both run it.
        Returns the task that checks, in that case."""
        if claimed_at > self._resumed_at and time.time() - claimed_at < self._inbox.lease_seconds / 2:
            self.schedule(message)
            return None
        task = asyncio.create_task(self._take_over(message, claimed_at), name=f"take-{message.message_id}")
        self._revivals.add(task)
        task.add_done_callback(self._revivals.discard)
        return task

    async def _take_over(self, message: IncomingMessage, claimed_at: float) -> None:
        try:
            if await self._inbox.take(Unfinished(message, InboxState.PROCESSING.value, claimed_at)):
                self.schedule(message)
        except StorageError:
            pass  # the database's health logs it; a resume after the fault finds the message
        except Exception:
            log.exception("message %s: could not take it over from the acking process", message.message_id)

    def redelivered(self, message: IncomingMessage) -> None:
        """A duplicate callback: if its stored reply is still unsent, retry it via the new webhook."""
        task = asyncio.create_task(self._revive(message), name=f"revive-{message.message_id}")
        self._revivals.add(task)
        task.add_done_callback(self._revivals.discard)

    async def _revive(self, message: IncomingMessage) -> None:
        route = Route.for_message(message, self._default_robot_code)
        try:
            if await self._outbox.revive(message.message_id, route):
                log.info(
                    "message %s: redelivered while its reply is unsent; sending it again", message.message_id
                )
                await self._courier.send_due()
        except StorageError:
            pass  # the database's health logs it; the periodic check sends the reply once it works
        except Exception:
            log.exception("message %s: could not retry the stored reply", message.message_id)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        msg_id = task.get_name().removeprefix("message-")
        if self._tasks.get(msg_id) is task:
            del self._tasks[msg_id]

    async def resume(self, *, all_processing: bool, retry_after_seconds: float) -> int:
        """Schedule unfinished messages from the inbox. `all_processing`: every `processing` row not running
        here is orphaned — at startup, and when the database works again after a fault (the tasks it failed
        could not even mark their messages failed)."""
        resumed = 0
        self._resumed_at = time.time()  # before the read: a message claimed after it is not in it
        for item in await self._inbox.unfinished(
            all_processing=all_processing, retry_after_seconds=retry_after_seconds
        ):
            if item.message.message_id in self._tasks or not await self._inbox.take(item):
                continue
            resumed += 1
            token = current_message_id.set(item.message.message_id)
            try:
                self.schedule(item.message)
            finally:
                current_message_id.reset(token)
        if resumed:
            log.warning("resumed %d unfinished message(s) from the inbox", resumed)
        return resumed

    async def keep_claims(self, every_seconds: float) -> None:
        """Renew the inbox claims of the messages being answered here, every `every_seconds`, so another
        replica takes them over only when this process is gone (Inbox.lease_seconds)."""
        while True:
            await asyncio.sleep(every_seconds)
            try:
                await self._inbox.renew(list(self._tasks))
            except StorageError:
                pass  # logged by the database health; a lapsed claim costs a second model call, not a reply
            except Exception:
                log.exception("could not renew the claims on messages being answered")

    async def _run(self, message: IncomingMessage) -> None:
        lane_key = self._assistant.history_scope(message)
        lane = self._lanes.setdefault(lane_key, asyncio.Lock())
        self._lane_users[lane_key] += 1
        try:
            async with lane:  # in order per conversation and speaker, to the history write
                await self._process(message)
        except asyncio.CancelledError:
            # Stopped mid-answer (shutdown): resumed at the next start, or answered when redelivered.
            with contextlib.suppress(StorageError):
                await asyncio.shield(self._inbox.mark_failed(message.message_id))
            raise
        except StorageError:
            # Logged once a minute by the database's health. The message stays `processing` if even this
            # fails: resumed as soon as the database works again (api/delivery/recovery.py).
            log.warning("message %s: the database failed; answered again once it works", message.message_id)
            with contextlib.suppress(StorageError):
                await self._inbox.mark_failed(message.message_id)
        except Exception:
            log.exception("message %s: unexpected failure; retried later", message.message_id)
            with contextlib.suppress(StorageError):
                await self._inbox.mark_failed(message.message_id)
        finally:
            self._lane_users[lane_key] -= 1
            if self._lane_users[lane_key] == 0:
                del self._lane_users[lane_key], self._lanes[lane_key]

    async def _answer(self, message: IncomingMessage, card: CardStream | None) -> Reply:
        """The assistant's reply, within the deadline: past it, the person is told it timed out."""
        deadline = asyncio.timeout(self._deadline)
        try:
            async with deadline:
                return await self._assistant.reply(message, stream=card)
        except asyncio.CancelledError:
            if card is not None:
                note = self._assistant.prompts_for(message).model_error_reply(ModelErrorKind.UNKNOWN)
                await card.abandon(note)
            raise
        except TimeoutError:
            if not deadline.expired():
                raise  # a timeout of something else: the message is retried, as any failure
            log.warning(
                "message %s: no answer within %.0f s; the person is told", message.message_id, self._deadline
            )
            prompts = self._assistant.prompts_for(message)
            return Reply(prompts.model_error_reply(ModelErrorKind.TIMEOUT), failed=True)
        finally:
            if card is not None:
                await card.close()

    async def _process(self, message: IncomingMessage) -> None:
        started = time.perf_counter()
        route = Route.for_message(message, self._default_robot_code)
        card = None
        if self._cards is not None:
            card = CardStream(self._cards, route, sender_nick=message.sender_nick)
        async with self._slots:  # WORKERS answers at once; storing and sending them wait for no slot
            reply = await self._answer(message, card)
        bodies: list[dict[str, Any]] = build_reply_bodies(message, reply, REPLY_MAX_BYTES)
        if card is not None and card.card_id:
            # The card is finished first (through the outbox); the plain parts are its fallback.
            route = replace(route, card_id=card.card_id)
            bodies = [{"card": {"text": reply.text, "failed": reply.failed}}, *bodies]
        # From here the reply is DingTalk's to receive: stored with the message marked done, in one step.
        try:
            learning = message_to_json(message) if self._assistant.learns_from(message, reply) else None
            parts = await self._outbox.store_reply(
                message.message_id,
                message.person_id,
                route,
                bodies,
                learning=learning,
                claim_seconds=self._courier.claim_seconds,  # sent next: claimed in the same transaction
            )
        except BaseException:
            if card is not None:  # answered again later, in a new card: this one must not spin
                await card.abandon(
                    self._assistant.prompts_for(message).model_error_reply(ModelErrorKind.UNKNOWN)
                )
            raise
        remembering = self._assistant.remembering(message, reply)  # its turn: kept as it is marked sent
        async with self._sends:
            outcome = await self._courier.deliver(parts, remembering)
        elapsed = (time.perf_counter() - started) * 1000
        if outcome is Delivery.SENT:
            log.info("message %s: replied in %.0f ms", message.message_id, elapsed)
        elif outcome is Delivery.RETRYING:
            log.warning(
                "message %s: reply stored, not delivered yet after %.0f ms (the outbox retries)",
                message.message_id,
                elapsed,
            )
        else:
            log.warning("message %s: reply could not be delivered (%.0f ms)", message.message_id, elapsed)
            return  # the person never saw it: it does not belong in the conversation's history
        if remembering is not None:
            await remembering.finish()

    async def drain(self, grace_seconds: float) -> None:
        """On shutdown: let in-flight messages finish for up to `grace_seconds`, then cancel them."""
        pending = set(self._tasks.values()) | self._revivals
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=grace_seconds)
        for task in still:
            task.cancel()
        if still:
            log.warning("shutdown: %d message(s) cancelled before their reply", len(still))
            await asyncio.gather(*still, return_exceptions=True)
