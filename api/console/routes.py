"""The console's ground: its route class (security headers), the guard and session dependencies, login and
logout, and the audit log page. The other pages build on these."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from api.console.audit import AuditLog
from api.console.security import COOKIE, HEADERS, LOGIN_SECONDS, ConsoleGuard, Session
from api.deps import ServicesDep

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")  # autoescaped: what people wrote renders as text
CSS = (HERE / "static" / "console.css").read_text(encoding="utf-8")


class ConsoleRoute(APIRoute):
    """Every console response carries the security headers (the callback's routes pay nothing for them)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            try:
                response = await handler(request)
            except HTTPException as exc:
                raise HTTPException(
                    exc.status_code, exc.detail, headers={**HEADERS, **(exc.headers or {})}
                ) from exc
            response.headers.update(HEADERS)
            return response

        return with_headers


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def address_of(request: Request) -> str:
    return request.client.host if request.client is not None else ""


async def _guard(request: Request) -> ConsoleGuard:
    guard: ConsoleGuard = request.app.state.console_guard
    if not guard.allows(address_of(request)):
        raise HTTPException(403, "this address may not use the console (CONSOLE_ALLOWED_IPS)")
    return guard


GuardDep = Annotated[ConsoleGuard, Depends(_guard)]


async def _audit(services: ServicesDep) -> AuditLog:
    return AuditLog(services.database)


AuditDep = Annotated[AuditLog, Depends(_audit)]


class SignIn(Exception):
    """Not signed in: to the login page."""


async def _signed_in(request: Request, guard: GuardDep) -> Session:
    session = guard.session(request.cookies.get(COOKIE))
    if session is None or not session.signed_in:
        raise SignIn
    return session


SessionDep = Annotated[Session, Depends(_signed_in)]


async def _form_checked(guard: GuardDep, session: SessionDep, csrf: Annotated[str, Form()] = "") -> Session:
    """A signed-in session whose form carries its CSRF token: every change made through the console."""
    if not guard.csrf_ok(session, csrf):
        raise HTTPException(403, "the form's CSRF token is missing or wrong")
    return session


FormDep = Annotated[Session, Depends(_form_checked)]


def when(at: float | None, zone: tzinfo, *, seconds: bool = True) -> str:
    """A stored time as the console shows it: in BOT_TIMEZONE (the team's hours, not the server's)."""
    if not at:
        return ""
    return datetime.fromtimestamp(at, zone).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def page(request: Request, name: str, guard: ConsoleGuard, session: Session, **context: Any) -> Response:
    return templates.TemplateResponse(
        request, name, {"csrf": guard.csrf(session), "signed_in": session.signed_in, **context}
    )


def _set_cookie(response: Response, value: str, seconds: int, request: Request) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=seconds,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.get("/static/console.css")
async def stylesheet() -> Response:
    return Response(CSS, media_type="text/css")


@router.get("/login")
async def login_form(request: Request, guard: GuardDep) -> Response:
    current = guard.session(request.cookies.get(COOKIE))
    if current is not None and current.signed_in:
        return RedirectResponse("/console", 303)
    session, cookie = guard.new_session(signed_in=False)
    response = page(request, "login.html", guard, session, error="")
    _set_cookie(response, cookie, LOGIN_SECONDS, request)
    return response


@router.post("/login")
async def login(
    request: Request,
    guard: GuardDep,
    audit: AuditDep,
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    address = address_of(request)
    session = guard.session(request.cookies.get(COOKIE))
    if session is None or not guard.csrf_ok(session, csrf):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: open the login page again")
    wait = guard.locked_for(address)
    if wait > 0:
        await audit.record("locked_out", address)
        response = page(request, "login.html", guard, session, error="locked", wait=int(wait // 60) + 1)
        response.status_code = 429
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    if not guard.password_ok(password, address):
        await audit.record("login_failed", address)
        response = page(request, "login.html", guard, session, error="wrong")
        response.status_code = 401
        return response
    await audit.record("login", address)
    _, cookie = guard.new_session(signed_in=True)
    response = RedirectResponse("/console", 303)
    _set_cookie(response, cookie, guard.session_seconds, request)
    return response


@router.post("/logout")
async def logout(request: Request, session: FormDep, audit: AuditDep) -> Response:
    await audit.record("logout", address_of(request))
    response = RedirectResponse("/console/login", 303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/audit")
async def audit_page(
    request: Request, guard: GuardDep, session: SessionDep, audit: AuditDep, services: ServicesDep
) -> Response:
    zone = services.settings.timezone
    entries = [(when(e.at, zone), e.address, e.action, e.target) for e in await audit.recent()]
    return page(request, "audit.html", guard, session, entries=entries)


async def sign_in_first(request: Request, exc: Exception) -> Response:
    """Not signed in: to the login page (with the console's headers)."""
    return RedirectResponse("/console/login", 303, headers=HEADERS)


async def storage_failed(request: Request, exc: Exception) -> Response:
    """The database failed under a console page: one clear sentence (and the fix), 503, the headers."""
    return Response(
        f"数据库暂时不可用，请稍后再试。The database is unavailable right now: {exc}",
        status_code=503,
        media_type="text/plain; charset=utf-8",
        headers={**HEADERS, "Retry-After": "5"},
    )
