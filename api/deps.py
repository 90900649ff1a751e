"""FastAPI dependencies: typed access to what the lifespan built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.services import Services


# Async on purpose: a plain `def` dependency runs in a worker thread on every request (slower acks).
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
