"""Intake: what happens to a parsed DingTalk message, whichever way it came (HTTP callback or Stream).

Checks the reply host, the robot and organisation, the allowlists and the message's age, then the atomic
dedupe insert into the inbox, and schedules the work. One path for both transports.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.messages import IncomingMessage
from agent.observe import current_message_id
from agent.settings.config import Settings
from agent.storage.health import StorageError
from api.dingtalk.parse import PayloadError, parse_callback
from api.dingtalk.reply import webhook_allowed
from api.services import Services

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    STALE = "stale"
    REFUSED_400 = "refused_400"
    REFUSED_403 = "refused_403"
    PARKED = "parked"  # a Stream message while the database fails: taken in when it works again


@dataclass(frozen=True)
class Intake:
    outcome: Outcome
    reason: str = ""  # why a message was refused: safe to return to the caller

    @property
    def refused(self) -> bool:
        return self.outcome in (Outcome.REFUSED_400, Outcome.REFUSED_403)


class IntakeSink(Protocol):
    """Where accepted messages go: the dispatcher, or (in the acking process) the inbox plus a word to the
    answering process."""

    async def accept(self, message: IncomingMessage) -> bool:
        """Store and claim the message; False for a msgId already seen."""
        ...

    def redelivered(self, message: IncomingMessage) -> None: ...

    def schedule(self, message: IncomingMessage) -> None: ...


@dataclass(frozen=True)
class Reception:
    """What the HTTP callback route needs, in the service or in the acking process (api/front/)."""

    settings: Settings
    sink: IntakeSink
    storage_ok: Callable[[], bool]  # False while the database has a fault: callbacks get 503
    count: Callable[[str], None]  # an outcome, for the callbacks metric


def _refused_origin(message: IncomingMessage, settings: Settings) -> str:
    """DINGTALK_ROBOT_CODE / DINGTALK_CORP_ID: a callback meant for another robot or organisation."""
    if settings.dingtalk_robot_code and message.bot_id and message.bot_id != settings.dingtalk_robot_code:
        return "callback is for another robot (robotCode differs from DINGTALK_ROBOT_CODE)"
    if settings.dingtalk_corp_id and message.org_id and message.org_id != settings.dingtalk_corp_id:
        return "callback is for another organisation (chatbotCorpId differs from DINGTALK_CORP_ID)"
    return ""


def _allowed(message: IncomingMessage, settings: Settings) -> bool:
    users, groups = settings.allowed_user_ids, settings.allowed_group_ids
    if users and not ({message.sender_staff_id, message.sender_id, message.person_id} & users):
        return False
    return not (message.is_group and groups and message.conversation_id not in groups)


def _webhook_refusal(message: IncomingMessage, settings: Settings, from_this_machine: bool) -> str:
    """Why the session webhook may not be posted to ("" when it may): a configured DingTalk origin, or —
    in mock mode, for a callback sent on this machine (`dingbot simulate`, curl) — this machine itself.
    Never for a callback from elsewhere: the service would post wherever a stranger points it."""
    bases = [settings.dingtalk_oapi_base, settings.dingtalk_api_base]
    local = settings.mock_mode and from_this_machine
    if webhook_allowed(message.reply_url, bases, loopback=local):
        return ""
    if webhook_allowed(message.reply_url, [], loopback=True):
        return (
            "sessionWebhook is on this machine, not on a configured DingTalk host (DINGTALK_OAPI_BASE): "
            "accepted in mock mode only, for callbacks sent on this machine"
        )
    return "sessionWebhook is not on a configured DingTalk host (DINGTALK_OAPI_BASE)"


async def take_in(
    settings: Settings, sink: IntakeSink, message: IncomingMessage, *, from_this_machine: bool = False
) -> Intake:
    """Accept a verified, parsed message into the inbox (or say why not). Never waits for an answer."""
    current_message_id.set(message.message_id)
    refusal = _webhook_refusal(message, settings, from_this_machine)
    if refusal:
        return Intake(Outcome.REFUSED_400, refusal)
    if refusal := _refused_origin(message, settings):
        return Intake(Outcome.REFUSED_403, refusal)
    if not _allowed(message, settings):
        log.info(
            "message %s: sender or group not on ALLOWED_USERS/ALLOWED_GROUPS, ignored", message.message_id
        )
        return Intake(Outcome.IGNORED)
    if (
        message.created_at_ms
        and time.time() * 1000 - message.created_at_ms > settings.stale_message_seconds * 1000
    ):
        log.info(
            "message %s: older than STALE_MESSAGE_SECONDS, acknowledged but not answered", message.message_id
        )
        return Intake(Outcome.STALE)
    if not message.addressed_to_bot:
        log.info("message %s: group message not addressed to the bot, ignored", message.message_id)
        return Intake(Outcome.IGNORED)
    if not await sink.accept(message):
        log.info("message %s: duplicate delivery, already handled", message.message_id)
        sink.redelivered(message)
        return Intake(Outcome.DUPLICATE)
    log.info(
        "message %s: accepted (%s, %s)",
        message.message_id,
        "group" if message.is_group else "direct",
        message.original_type,
    )
    log.debug(
        "message %s in conversation %s (%s) text: %s",
        message.message_id,
        message.conversation_id,  # the id prompts/groups/*.yaml names
        message.conversation_title or "one-to-one",
        message.text,
    )
    sink.schedule(message)  # the task inherits current_message_id for its log lines
    return Intake(Outcome.ACCEPTED)


async def take_in_stream(services: Services, data: str) -> Intake:
    """A message from a Stream CALLBACK frame (already acked): its `data` is an HTTP callback's body.
    Nothing is signed on this path: the connection itself was opened with the app's credentials."""
    try:
        message = parse_callback(data.encode("utf-8", errors="surrogatepass"))
    except PayloadError as exc:
        intake = Intake(Outcome.REFUSED_400, str(exc))
    else:
        # Acked already: while the database fails, kept in memory and taken in when it works again
        # (api/delivery/recovery.py).
        intake = Intake(Outcome.PARKED)
        try:
            if services.database.health.ok:
                intake = await take_in(services.settings, services.dispatcher, message)
        except StorageError:
            pass
        if intake.outcome is Outcome.PARKED:
            services.parked.park(data)
    if intake.refused:
        log.warning("stream message refused: %s", intake.reason)
    services.metrics.callback(intake.outcome.value)
    return intake
