"""Liveness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(services: ServicesDep) -> JSONResponse:
    database_ok = await services.database.ping()
    body = {
        "status": "ok" if database_ok else "degraded",
        "database": "ok" if database_ok else "unavailable",
        "provider": services.settings.provider.value,
        "model": services.settings.openai_model if not services.settings.mock_mode else "mock",
        "in_flight": services.dispatcher.in_flight,
        "memory": "ok" if services.memory.available else "off",
        "memory_writes": services.memory.pending_writes,
    }
    return JSONResponse(body, status_code=200 if database_ok else 503)
