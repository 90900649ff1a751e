"""FastAPI dependencies: typed access to what the lifespan built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from agent.config import Settings
from api.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_settings(services: Annotated[Services, Depends(get_services)]) -> Settings:
    return services.settings


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
