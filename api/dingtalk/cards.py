"""AI cards: an answer that appears as it is written (dingtalk-protocol.md, "AI card streaming").

Create a card instance from the template (`POST /v1.0/card/instances`, flowStatus 1 "processing"),
deliver it to the conversation (`POST /v1.0/card/instances/deliver`; in groups the sender is @-mentioned),
then `PUT /v1.0/card/streaming` with the full text so far (a fresh guid each time, `isFull`), and finish:
the last streaming update with `isFinalize` (and `isError` for a failure), then the card's flowStatus 3
(done) or 5 (failed). The finish goes through the outbox (delivery/courier.py), so it is retried, and a card
that cannot be finished falls back to plain messages. Needs Card.Instance.Write and Card.Streaming.Write.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import httpx

from api.dingtalk.openapi import AccessTokens, call_openapi, http_failure
from api.dingtalk.reply import Route, without_html
from api.dingtalk.sender import SendResult

log = logging.getLogger(__name__)

CONTENT_KEY = "content"  # the template's variable the answer streams into
PROCESSING, FINISHED, FAILED = "1", "3", "5"  # flowStatus values of DingTalk's AI card
UPDATE_INTERVAL_SECONDS = 0.6  # streaming updates no more often than this (DingTalk: ~500–800 ms)
PAUSE_AFTER_REFUSAL_SECONDS = 600.0  # after a permission refusal, plain replies for this long


def read_card_answer(response: httpx.Response, what: str) -> SendResult:
    failure = http_failure(response, f"card {what}:")
    if failure is not None:
        return failure
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if isinstance(answer, dict) and answer.get("success") is False:
        # only DingTalk's code and message: never the answer whole (it could echo the card's text)
        code, message = str(answer.get("code", ""))[:80], str(answer.get("message", ""))[:200]
        return SendResult(False, status=200, detail=f"card {what}: refused ({code}: {message})")
    return SendResult(True, status=200)


class CardSender:
    """The card calls, with the app's access token. Never logs a token or the card's text."""

    def __init__(
        self, client: httpx.AsyncClient, tokens: AccessTokens, *, api_base: str, template_id: str
    ) -> None:
        self._client = client
        self._tokens = tokens
        self._base = api_base.rstrip("/")
        self._template_id = template_id
        self.paused_until = 0.0  # monotonic: no new cards before this (a permission refusal)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self.paused_until

    async def _call(self, method: str, path: str, payload: dict[str, Any], what: str) -> SendResult:
        response = await call_openapi(self._client, self._tokens, method, f"{self._base}{path}", payload)
        if isinstance(response, SendResult):
            return response
        return read_card_answer(response, what)

    async def open(self, card_id: str, route: Route, *, sender_nick: str) -> SendResult:
        """Create the card (processing, empty) and deliver it to the conversation."""
        if not route.robot_code:
            return SendResult(False, detail="card: no robotCode (set DINGTALK_ROBOT_CODE)")
        created = await self._call(
            "POST",
            "/v1.0/card/instances",
            {
                "cardTemplateId": self._template_id,
                "outTrackId": card_id,
                "cardData": {"cardParamMap": {"flowStatus": PROCESSING, CONTENT_KEY: ""}},
                "imGroupOpenSpaceModel": {"supportForward": True},
                "imRobotOpenSpaceModel": {"supportForward": True},
            },
            "create",
        )
        if not created.ok:
            return self.refused(created)
        deliver: dict[str, Any] = {"outTrackId": card_id, "userIdType": 1}
        if route.is_group:
            deliver["openSpaceId"] = f"dtv1.card//IM_GROUP.{route.conversation_id}"
            group: dict[str, Any] = {"robotCode": route.robot_code}
            if route.user_id:  # group replies notify the sender
                group["atUserIds"] = {route.user_id: sender_nick or route.user_id}
            deliver["imGroupOpenDeliverModel"] = group
        else:
            if not route.user_id:
                return SendResult(False, detail="card: the person has no staff id (an external user)")
            deliver["openSpaceId"] = f"dtv1.card//IM_ROBOT.{route.user_id}"
            deliver["imRobotOpenDeliverModel"] = {"spaceType": "IM_ROBOT", "robotCode": route.robot_code}
        return self.refused(await self._call("POST", "/v1.0/card/instances/deliver", deliver, "deliver"))

    def refused(self, result: SendResult) -> SendResult:
        """A permission refusal (403) on any card call pauses new cards: plain replies meanwhile."""
        if result.status == 403 and self.available:
            self.paused_until = time.monotonic() + PAUSE_AFTER_REFUSAL_SECONDS
            log.warning(
                "%s: plain replies for the next %.0f min (grant the app Card.Instance.Write and "
                "Card.Streaming.Write, and check DINGTALK_CARD_TEMPLATE_ID)",
                result.detail,
                PAUSE_AFTER_REFUSAL_SECONDS / 60,
            )
        return result

    async def stream(
        self, card_id: str, text: str, *, finalize: bool = False, failed: bool = False
    ) -> SendResult:
        """Show `text` (the whole answer so far) in the card."""
        payload = {
            "outTrackId": card_id,
            "guid": uuid.uuid4().hex,
            "key": CONTENT_KEY,
            "content": without_html(text),
            "isFull": True,
            "isFinalize": finalize,
            "isError": failed,
        }
        return await self._call("PUT", "/v1.0/card/streaming", payload, "update")

    async def finish(
        self, card_id: str, text: str, *, failed: bool, finalized: bool = False
    ) -> tuple[SendResult, bool]:
        """The final text (`isFinalize`), then the card's status: done (3) or failed (5).

        Returns the result and whether the final text is in the card (so a retry after a failed status
        update does not finalize twice: pass it back as `finalized`)."""
        if not finalized:
            last = self.refused(await self.stream(card_id, text, finalize=True, failed=failed))
            if not last.ok:
                return last, False
        return self.refused(await self.set_status(card_id, text, failed=failed)), True

    async def set_status(self, card_id: str, text: str, *, failed: bool) -> SendResult:
        status = FAILED if failed else FINISHED
        card_data = {"cardParamMap": {"flowStatus": status, CONTENT_KEY: without_html(text)}}
        return await self._call(
            "PUT", "/v1.0/card/instances", {"outTrackId": card_id, "cardData": card_data}, "finish"
        )


class CardStream:
    """One answer streaming into one card: created when the model starts, updated at most every
    UPDATE_INTERVAL_SECONDS with the full text so far. agent.model.answer's AnswerStream."""

    def __init__(self, cards: CardSender, route: Route, *, sender_nick: str) -> None:
        self._cards = cards
        self._route = route
        self._nick = sender_nick
        self.card_id = ""  # set once the card is delivered
        self._latest = ""
        self._shown = ""
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._updater: asyncio.Task[None] | None = None

    async def started(self) -> None:
        if not self._cards.available or self.card_id:  # a second attempt at the answer keeps its card
            return
        # Known before DingTalk answers: when the answer's deadline strikes while the card is being opened
        # (it may already be in the chat), the card is still finished, not left spinning.
        self.card_id = card_id = uuid.uuid4().hex
        try:
            result = await self._cards.open(card_id, self._route, sender_nick=self._nick)
        except Exception as exc:  # never let the card take the answer down: plain reply instead
            self.card_id = ""
            log.warning("card not created (%s): the answer goes as a plain message", type(exc).__name__)
            return
        if not result.ok:
            self.card_id = ""
            log.warning("card not created (%s): the answer goes as a plain message", result.detail)
            return
        self._updater = asyncio.create_task(self._update_loop(), name=f"card-{card_id[:8]}")

    async def text(self, so_far: str) -> None:
        self._latest = so_far
        self._changed.set()

    async def _update_loop(self) -> None:
        while not self._closing:
            await self._changed.wait()
            self._changed.clear()
            text = self._latest
            if self._closing:
                return
            if text == self._shown:
                continue
            try:
                result = await self._cards.stream(self.card_id, text)
            except Exception as exc:
                log.warning("card update failed (%s): no more updates until the end", type(exc).__name__)
                return
            if not result.ok:
                self._cards.refused(result)
                log.warning("card update refused (%s): no more updates until the end", result.detail)
                return
            self._shown = text
            try:  # at most one update per interval; the end of the answer cuts the wait short
                await asyncio.wait_for(self._closed.wait(), UPDATE_INTERVAL_SECONDS)
                return
            except TimeoutError:
                pass

    async def abandon(self, note: str, *, seconds: float = 3.0) -> None:
        """The answer was stopped (shutdown, a failure before it was stored): finish the card as failed
        with `note` rather than leave it spinning; the message itself is answered again later."""
        await self.close()
        if not self.card_id:
            return
        try:
            await asyncio.wait_for(self._cards.finish(self.card_id, note, failed=True), seconds)
        except Exception as exc:
            log.warning("card left unfinished (%s)", type(exc).__name__)

    async def close(self, *, seconds: float = 5.0) -> None:
        """Stop updating; an update already on its way completes first, so none lands after the
        finish (the outbox finishes the card with the whole answer)."""
        self._closing = True
        self._closed.set()
        self._changed.set()
        updater, self._updater = self._updater, None
        if updater is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(updater), seconds)
        except TimeoutError:
            updater.cancel()
            await asyncio.gather(updater, return_exceptions=True)
