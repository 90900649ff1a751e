"""The console's conversations and people pages: recent conversations and their transcripts (text only with
CONSOLE_SHOW_TEXT), a person's memories with where each was learned, and erasing everything about them
through the same path as their own /forget all (audited)."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from agent.commands import forget_everything
from api.console.routes import AuditDep, ConsoleRoute, FormDep, GuardDep, SessionDep, address_of, page, when
from api.deps import ServicesDep

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
LISTED = 200  # conversations listed, most recent activity first
RECENT_ROWS = 20_000  # newest history rows looked through to find them
SEPARATOR = "\x1f"  # a history scope is "<conversation id>\x1f<person id, or * for a shared group>"


@router.get("/conversations")
async def conversations(
    request: Request, guard: GuardDep, session: SessionDep, services: ServicesDep
) -> Response:
    def read(conn: Any) -> list[tuple[str, int, float]]:
        # The newest rows by the time index give the conversations with recent activity; their turns are
        # counted by the scope index. No scan of the whole history, however long it grows.
        latest: dict[str, float] = {}
        for scope, at in conn.execute(
            "SELECT scope, created_at FROM history ORDER BY created_at DESC LIMIT ?", (RECENT_ROWS,)
        ):
            latest.setdefault(str(scope), float(at))
            if len(latest) >= LISTED:
                break
        if not latest:
            return []
        marks = ", ".join("?" for _ in latest)
        counts = dict(
            conn.execute(
                f"SELECT scope, COUNT(*) FROM history WHERE scope IN ({marks}) GROUP BY scope",  # noqa: S608
                tuple(latest),
            ).fetchall()
        )
        return [(scope, int(counts.get(scope, 0)), at) for scope, at in latest.items()]

    listed = []
    for scope, rows, last in await services.database.run(read):
        conversation, _, person = scope.partition(SEPARATOR)
        listed.append(
            {
                "scope": quote(scope, safe=""),
                "conversation": conversation,
                "speaker": "（群内共享 · shared）" if person == "*" else person,
                "turns": rows // 2,
                "last": when(last, services.settings.timezone, seconds=False),
            }
        )
    return page(request, "conversations.html", guard, session, conversations=listed)


@router.get("/conversations/view")
async def transcript(
    request: Request, guard: GuardDep, session: SessionDep, services: ServicesDep, scope: str = ""
) -> Response:
    show = services.settings.console_show_text

    def read(conn: Any) -> list[tuple[str, str, str, float]]:
        rows = conn.execute(
            "SELECT person_id, role, content, created_at FROM history WHERE scope = ? ORDER BY id", (scope,)
        ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    lines = [
        {
            "who": person if role == "human" else services.settings.bot_name,
            "text": content if show else f"（{len(content)} 字，已隐藏 · {len(content)} characters, hidden）",
            "when": when(at, services.settings.timezone, seconds=False),
        }
        for person, role, content, at in await services.database.run(read)
    ]
    conversation, _, person = scope.partition(SEPARATOR)
    summary = await services.assistant.summaries.text(scope) if services.assistant.summaries else ""
    return page(
        request,
        "transcript.html",
        guard,
        session,
        conversation=conversation,
        speaker=person,
        lines=lines,
        show_text=show,
        summary=summary if show else ("（已隐藏 · hidden）" if summary else ""),
    )


@router.get("/people")
async def people(
    request: Request, guard: GuardDep, session: SessionDep, services: ServicesDep, q: str = ""
) -> Response:
    found: list[str] = []
    if q.strip():
        pattern = f"%{q.strip()}%"

        def read(conn: Any) -> list[str]:
            rows = conn.execute(
                "SELECT person_id FROM history WHERE person_id LIKE ? UNION "
                "SELECT person_id FROM token_usage WHERE person_id LIKE ? ORDER BY 1 LIMIT 100",
                (pattern, pattern),
            ).fetchall()
            return [str(r[0]) for r in rows]

        found = await services.database.run(read)
        if services.memory.available:
            found = sorted({*found, *await services.memory.people_like(q.strip())})[:100]
    listed = [{"id": person, "link": quote(person, safe="")} for person in found]
    return page(request, "people.html", guard, session, q=q, people=listed)


@router.get("/people/view")
async def person_page(
    request: Request,
    guard: GuardDep,
    session: SessionDep,
    services: ServicesDep,
    person: str = "",
    done: str = "",
) -> Response:
    memories: list[dict[str, str]] = []
    available = services.memory.available
    try:
        stored = await services.memory.memories_of(person) if available else []
    except Exception as exc:  # the vector store failing now: said on the page, not a 500
        log.warning("console: memories of a person could not be read (%s)", type(exc).__name__)
        available, stored = False, []
    if available:
        for memory_id, text, where in stored:
            memories.append(
                {
                    "id": memory_id,
                    "text": text
                    if services.settings.console_show_text
                    else f"（{len(text)} 字，已隐藏 · hidden）",
                    "where": "单聊 · one-to-one"
                    if where.get("chat") == "direct"
                    else f"群 · group {where.get('conversation_id', '')}",
                }
            )
    return page(
        request,
        "person.html",
        guard,
        session,
        person=person,
        link=quote(person, safe=""),
        memories=memories,
        available=available,
        done=done,
    )


@router.post("/people/forget")
async def forget_person(
    request: Request,
    guard: GuardDep,
    session: FormDep,
    services: ServicesDep,
    audit: AuditDep,
    person: Annotated[str, Form()] = "",
) -> Response:
    if not person:
        raise HTTPException(400, "which person: the form names none")
    erased = await forget_everything(services.assistant.history, services.memory, person, time.time())
    await audit.record("forget_person", address_of(request), person)
    outcome = "all" if erased is not None else "history_only"
    return RedirectResponse(f"/console/people/view?person={quote(person, safe='')}&done={outcome}", 303)


@router.post("/people/forget-one")
async def forget_memory(
    request: Request,
    guard: GuardDep,
    session: FormDep,
    services: ServicesDep,
    audit: AuditDep,
    person: Annotated[str, Form()] = "",
    memory: Annotated[str, Form()] = "",
) -> Response:
    if not (person and memory):
        raise HTTPException(400, "which memory of whom: the form names none")
    if not services.memory.available:
        raise HTTPException(503, "long-term memory is unavailable right now: nothing was erased")
    try:
        erased = await services.memory.erase_memory(person, memory)
    except Exception as exc:  # the vector store failing now, or an id it cannot take
        log.warning("console: a memory could not be erased (%s)", type(exc).__name__)
        raise HTTPException(
            503, "long-term memory could not erase it right now: nothing was erased"
        ) from None
    if not erased:
        raise HTTPException(409, "that memory is not this person's, or was erased already")
    await audit.record("forget_memory", address_of(request), f"{person} {memory}")
    return RedirectResponse(f"/console/people/view?person={quote(person, safe='')}&done=one", 303)
