"""The console's settings and diagnostics page: the effective settings (a secret only as "set", an address
without its user, query or path secrets) and the `dingbot doctor` checks, run on demand in the service."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import SecretStr

from agent.model.errors import public_endpoint
from agent.settings.config import Settings
from agent.settings.reference import rows
from api.console.routes import AuditDep, ConsoleRoute, FormDep, GuardDep, SessionDep, address_of, page
from api.deps import ServicesDep
from api.doctor import run_checks

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console/settings", route_class=ConsoleRoute, include_in_schema=False)
DOCTOR_TIMEOUT = 20.0  # seconds each model call of the doctor may take (at most OPENAI_TIMEOUT)
SYMBOLS = {"ok": "✓", "fail": "✗", "warn": "!", "skip": "-"}


def shown(value: Any) -> str:
    """A setting's value as the console shows it: never a secret, never credentials inside an address."""
    if value is None:
        return "—"
    if isinstance(value, SecretStr):
        return "已设置 · set" if value.get_secret_value() else "（空 · empty）"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(shown(item) for item in value) or "（空 · empty）"
    if isinstance(value, dict):
        return json.dumps({key: shown(item) for key, item in value.items()}, ensure_ascii=False)
    text = str(value)
    return public_endpoint(text) if "://" in text else text


def effective(settings: Settings) -> list[dict[str, Any]]:
    given = settings.model_fields_set
    listed = []
    for row in rows():
        field = row.name.lower()
        listed.append(
            {
                "name": row.name,
                "section": row.section,
                "value": shown(getattr(settings, field)),
                "given": field in given,
                "meaning": row.zh or row.en,
            }
        )
    return listed


@router.get("")
async def settings_page(
    request: Request, guard: GuardDep, session: SessionDep, services: ServicesDep
) -> Response:
    return page(
        request, "settings.html", guard, session, settings=effective(services.settings), checks=None, error=""
    )


@router.post("/doctor")
async def doctor(
    request: Request,
    guard: GuardDep,
    session: FormDep,
    services: ServicesDep,
    audit: AuditDep,
) -> Response:
    settings = services.settings
    memory = services.memory
    await audit.record("doctor_run", address_of(request))  # it probes endpoints and starts MCP servers
    error = ""
    results: list[dict[str, Any]] = []
    try:
        checks, _ = await asyncio.to_thread(
            run_checks,
            settings,
            timeout=min(DOCTOR_TIMEOUT, settings.openai_timeout),
            service_dims=lambda: memory.embedding_dims,  # this service holds the memory store
        )
        results = [{**check.to_dict(), "symbol": SYMBOLS[check.status.value]} for check in checks]
    except Exception as exc:  # a check that breaks must not break the page: said, and logged
        log.exception("the doctor could not finish")
        error = f"诊断没能完成 · the doctor could not finish: {type(exc).__name__}"
    return page(
        request, "settings.html", guard, session, settings=effective(settings), checks=results, error=error
    )
