"""POST /dingtalk/callback: verify on the raw request, parse, then the intake (delivery/intake.py)."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from agent.storage.health import StorageError
from api.delivery.intake import Outcome, Reception, take_in
from api.deps import LocalPeer
from api.dingtalk.parse import PayloadError, parse_callback
from api.dingtalk.signature import SignatureError, verify_callback

log = logging.getLogger(__name__)
router = APIRouter(tags=["dingtalk"])

EMPTY_ACK = {"msgtype": "empty"}
MAX_BODY_BYTES = 64 * 1024  # real callbacks are a few KiB
RETRY_AFTER_SECONDS = 5  # while the database is failing (a storage probe runs every second)


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


def _unavailable() -> JSONResponse:
    """The database cannot take the message: DingTalk delivers it again later. Not logged per request:
    the database's health logs the fault, the file and the fix once a minute."""
    return JSONResponse(
        {"error": "storage unavailable, deliver again later"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


# Async on purpose: a plain `def` dependency runs in a worker thread on every request (slower acks).
async def get_reception(request: Request) -> Reception:
    """The service's (api/app.py) or the acking process's (api/front/) reception, built by its lifespan."""
    reception: Reception = request.app.state.reception
    return reception


ReceptionDep = Annotated[Reception, Depends(get_reception)]


@router.post("/dingtalk/callback")
async def dingtalk_callback(request: Request, reception: ReceptionDep, local: LocalPeer) -> JSONResponse:
    outcome, response = await _handle(request, reception, local)
    reception.count(outcome)
    return response


async def _handle(request: Request, reception: Reception, local: bool) -> tuple[str, JSONResponse]:
    settings = reception.settings
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
    if not reception.storage_ok():
        return "unavailable_503", _unavailable()
    try:
        intake = await take_in(settings, reception.sink, message, from_this_machine=local)
    except StorageError:
        return "unavailable_503", _unavailable()
    if intake.refused:
        status = 400 if intake.outcome is Outcome.REFUSED_400 else 403
        return intake.outcome.value, _refuse(status, intake.reason)
    return intake.outcome.value, JSONResponse(EMPTY_ACK)
