"""The console's deliveries page: replies and notices that wait or were given up, with what DingTalk's
errcode means, and retrying one (audited). Never a reply's text or its route (the session webhook)."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from api.console.routes import AuditDep, ConsoleRoute, FormDep, GuardDep, SessionDep, address_of, page, when
from api.delivery.outbox import Outbox, OutboxState
from api.deps import ServicesDep
from api.dingtalk.sender import errcode_meaning

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console/deliveries", route_class=ConsoleRoute, include_in_schema=False)
_ERRCODE = re.compile(r"errcode (-?\d+)")
_URL = re.compile(r"https?://\S+")
_STATES = {OutboxState.PENDING.value: "等待发送 · waiting", OutboxState.FAILED.value: "已放弃 · given up"}
_sends: set[asyncio.Task[int]] = set()  # sends started by a retry (kept until done)


def _finished(task: asyncio.Task[int]) -> None:
    _sends.discard(task)
    if not task.cancelled() and (failure := task.exception()) is not None:  # the next check tries again
        log.warning("console retry: the send failed (%s); the next check tries again", type(failure).__name__)


def _safe(error: str) -> str:
    """A stored error as shown: any address cut to its host (a session webhook's query is a credential)."""
    return _URL.sub(lambda match: urlsplit(match.group()).netloc or "<url>", error)


@router.get("")
async def deliveries(
    request: Request, guard: GuardDep, session: SessionDep, services: ServicesDep, retried: str = ""
) -> Response:
    def read(conn: Any) -> list[tuple[Any, ...]]:
        return list(
            conn.execute(
                "SELECT id, msg_id, part, channel, state, attempts, last_error, next_attempt_at, updated_at, "
                "body IS NOT NULL FROM outbox WHERE state IN (?, ?) ORDER BY updated_at DESC LIMIT 200",
                (OutboxState.PENDING.value, OutboxState.FAILED.value),
            ).fetchall()
        )

    rows = []
    zone = services.settings.timezone  # BOT_TIMEZONE: the team's hours, not the server's
    for (
        row_id,
        msg_id,
        part,
        channel,
        state,
        attempts,
        error,
        due,
        updated,
        has_body,
    ) in await services.database.run(read):
        code = _ERRCODE.search(error or "")
        rows.append(
            {
                "id": int(row_id),
                "message": str(msg_id or ""),
                "part": int(part) + 1,
                "channel": "回复 · reply" if channel == "reply" else "通知 · notice",
                "state": _STATES.get(str(state), str(state)),
                "failed": state == OutboxState.FAILED.value,
                "retryable": state == OutboxState.FAILED.value and bool(has_body),
                "attempts": int(attempts),
                "error": _safe(str(error or "")),
                "errcode": code.group(1) if code else "",
                "meaning": errcode_meaning(int(code.group(1))) if code else "",
                "due": when(due, zone) if state == OutboxState.PENDING.value else "",
                "updated": when(updated, zone),
            }
        )
    return page(request, "deliveries.html", guard, session, rows=rows, retried=retried)


@router.post("/retry")
async def retry(
    request: Request,
    guard: GuardDep,
    session: FormDep,
    services: ServicesDep,
    audit: AuditDep,
    row: Annotated[int, Form()] = 0,
) -> Response:
    revived = await Outbox(services.database).retry(row)
    if not revived:
        raise HTTPException(409, f"row {row} is not a given-up delivery any more (sent, or retried already)")
    await audit.record("reply_retried", address_of(request), str(row))
    task = asyncio.create_task(
        services.courier.send_due(), name=f"console-retry-{row}"
    )  # now, not next check
    _sends.add(task)
    task.add_done_callback(_finished)
    return RedirectResponse(f"/console/deliveries?retried={row}", 303)
