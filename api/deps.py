"""FastAPI dependencies: typed access to what the lifespan built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.dingtalk.reply import is_loopback_host
from api.services import Services

_FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")  # set by proxies: the request came from afar


# Async on purpose: a plain `def` dependency runs in a worker thread on every request (slower acks).
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def from_this_machine(request: Request) -> bool:
    """The request came from this machine itself: a loopback peer, and no proxy in between."""
    peer = request.client.host if request.client is not None else ""
    return is_loopback_host(peer) and not any(name in request.headers for name in _FORWARDED)


LocalPeer = Annotated[bool, Depends(from_this_machine)]
