"""The console's reminders page: everyone's pending reminders, soonest first (their text only with
CONSOLE_SHOW_TEXT), and cancelling one (audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from api.console.routes import AuditDep, ConsoleRoute, FormDep, GuardDep, SessionDep, address_of, page
from api.deps import ServicesDep

router = APIRouter(prefix="/console/reminders", route_class=ConsoleRoute, include_in_schema=False)


@router.get("")
async def reminders(
    request: Request, guard: GuardDep, session: SessionDep, services: ServicesDep, done: str = ""
) -> Response:
    toolbox = services.assistant.toolbox
    book = toolbox.reminders if toolbox is not None else None
    show = services.settings.console_show_text
    listed = []
    for reminder in await book.all_active() if book is not None else []:
        origin = reminder.origin
        listed.append(
            {
                "id": reminder.id,
                "person": reminder.person_id,
                "due": reminder.due_local().strftime("%Y-%m-%d %H:%M %Z"),
                "repeat": reminder.repeat.value if reminder.repeat else "",
                "where": f"群 · group {origin.conversation_id}" if origin.is_group else "单聊 · one-to-one",
                "text": reminder.text if show else f"（{len(reminder.text)} 字，已隐藏 · hidden）",
            }
        )
    return page(
        request, "reminders.html", guard, session, reminders=listed, available=book is not None, done=done
    )


@router.post("/cancel")
async def cancel(
    request: Request,
    guard: GuardDep,
    session: FormDep,
    services: ServicesDep,
    audit: AuditDep,
    reminder: Annotated[int, Form()] = 0,
) -> Response:
    toolbox = services.assistant.toolbox
    book = toolbox.reminders if toolbox is not None else None
    if book is None:
        raise HTTPException(404, "reminders are off in this service")
    cancelled = await book.cancel_by_id(reminder, source=f"console:{reminder}")
    if cancelled is None:
        raise HTTPException(409, f"reminder {reminder} is not pending any more (fired or cancelled)")
    await audit.record("reminder_cancelled", address_of(request), f"{reminder} {cancelled.person_id}")
    return RedirectResponse(f"/console/reminders?done={reminder}", 303)
