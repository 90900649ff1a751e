"""POST /dingtalk/callback: verify on the raw request, parse, dedupe, ack at once, answer later."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agent.config import Settings
from agent.messages import IncomingMessage
from agent.observe import current_message_id
from api.deps import ServicesDep
from api.dingtalk.parse import PayloadError, parse_callback
from api.dingtalk.reply import webhook_allowed
from api.dingtalk.signature import SignatureError, verify_callback

log = logging.getLogger(__name__)
router = APIRouter(tags=["dingtalk"])

EMPTY_ACK = {"msgtype": "empty"}
MAX_BODY_BYTES = 64 * 1024  # real callbacks are a few KiB


class BodyTooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    """The raw body, refusing (before reading it all) anything over MAX_BODY_BYTES."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse(status: int, reason: str) -> JSONResponse:
    log.warning("callback refused (%d): %s", status, reason)
    return JSONResponse({"error": reason}, status_code=status)


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


@router.post("/dingtalk/callback")
async def dingtalk_callback(request: Request, services: ServicesDep) -> JSONResponse:
    outcome, response = await _handle(request, services)
    services.metrics.callback(outcome)
    return response


async def _handle(request: Request, services: ServicesDep) -> tuple[str, JSONResponse]:
    settings = services.settings
    try:
        verify_callback(
            request.headers,
            secret=settings.callback_secret,
            outgoing_token=settings.dingtalk_outgoing_token,
            window_seconds=settings.dingtalk_sign_window_seconds,
            now_ms=int(time.time() * 1000),
            allow_unsigned=settings.mock_mode,
        )
    except SignatureError as exc:
        return "refused_401", _refuse(401, str(exc))

    try:
        raw = await _read_body(request)
    except BodyTooLarge:
        return "refused_413", _refuse(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        message = parse_callback(raw)
    except PayloadError as exc:
        return "refused_400", _refuse(400, str(exc))
    current_message_id.set(message.message_id)
    if not webhook_allowed(message.reply_url, [settings.dingtalk_oapi_base, settings.dingtalk_api_base]):
        return "refused_400", _refuse(
            400, "sessionWebhook is not on a configured DingTalk host (DINGTALK_OAPI_BASE)"
        )

    refusal = _refused_origin(message, settings)
    if refusal:
        return "refused_403", _refuse(403, refusal)
    if not _allowed(message, settings):
        log.info(
            "message %s: sender or group not on ALLOWED_USERS/ALLOWED_GROUPS, ignored", message.message_id
        )
        return "ignored", JSONResponse(EMPTY_ACK)

    if (
        message.created_at_ms
        and time.time() * 1000 - message.created_at_ms > settings.stale_message_seconds * 1000
    ):
        log.info(
            "message %s: older than STALE_MESSAGE_SECONDS, acknowledged but not answered", message.message_id
        )
        return "stale", JSONResponse(EMPTY_ACK)

    if not message.addressed_to_bot:
        log.info("message %s: group message not addressed to the bot, ignored", message.message_id)
        return "ignored", JSONResponse(EMPTY_ACK)

    if not await services.dispatcher.accept(message):
        log.info("message %s: duplicate delivery, already handled", message.message_id)
        services.dispatcher.redelivered(message)
        return "duplicate", JSONResponse(EMPTY_ACK)
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
    services.dispatcher.schedule(message)  # the task inherits current_message_id for its log lines
    return "accepted", JSONResponse(EMPTY_ACK)
