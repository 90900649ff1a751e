"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from agent.model.health import ModelState
from agent.settings.choices import DingTalkMode
from api.deps import LocalPeer, ServicesDep
from api.dingtalk.stream import StreamState, StreamStatus
from api.services import Services

router = APIRouter(tags=["health"])


# The causes of failures (hosts, folders, process names) are for operators: shown in full to requests from
# this machine (curl on the host, `dingbot doctor`), and only as states to the rest of the network.


@router.get("/healthz")
async def healthz(services: ServicesDep, local: LocalPeer) -> JSONResponse:
    database_ok = await services.database.ping()
    model = services.assistant.health.status
    working = database_ok and services.memory.available and model.state is not ModelState.FAILING
    prompts = services.assistant.prompts
    body = {
        "status": "ok" if working else "degraded",  # 503 only without the database: the process still serves
        "database": "ok" if database_ok else "unavailable",
        **services.database.health.public(details=local),  # damaged, full, unwritable, failing; the fix here
        "provider": services.settings.provider.value,
        "model": services.settings.openai_model if not services.settings.mock_mode else "mock",
        "in_flight": services.dispatcher.in_flight,
        "model_endpoint": model.public(details=local),
        "memory": "ok" if services.memory.available else "off",
        **({"memory_off": services.memory.off_reason} if services.memory.off_reason and local else {}),
        "memory_writes": services.memory.pending_writes,
        "prompts": {  # the loaded version, and files not in use right now (the last good one stays)
            "version": prompts.version,
            "problems": prompts.problems if local else len(prompts.problems),
            **({"groups": prompts.group_files()} if local else {}),  # override file -> conversation ids
        },
        **({"mcp": _mcp(services, local)} if services.mcp is not None else {}),
    }
    return JSONResponse(body, status_code=200 if database_ok else 503)


def _mcp(services: Services, local: bool) -> dict[str, dict[str, object]]:
    """Each MCP server's state and tools; why one failed (its command or host) only to this machine."""
    assert services.mcp is not None
    status = services.mcp.status()
    if not local:
        for server in status.values():
            server.pop("detail", None)
    return status


def stream_blocks_readiness(mode: DingTalkMode, status: StreamStatus) -> bool:
    """Stream only: not ready unless connected. Both: HTTP callbacks still come in while Stream
    reconnects, so only a failing Stream (bad credentials, a broken gateway) makes the service unready."""
    if status.ready:
        return False
    return mode is DingTalkMode.STREAM or status.state is StreamState.FAILING


@router.get("/readyz")
async def readyz(request: Request, local: LocalPeer) -> JSONResponse:
    """Ready when the lifespan finished building everything, the database answers and so does the vector
    server, when memory lives on one. Long-term memory that is off for another reason (e.g. an endpoint
    without embeddings) is reported but does not make the service unready."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse({"ready": False, "reason": "starting"}, status_code=503)
    if not await services.database.ping():
        storage = services.database.health
        reason = f"database {storage.fault.value}" if storage.fault else "database unavailable"
        body = {"ready": False, "reason": reason, **storage.public(details=local)}
        return JSONResponse(body, status_code=503)
    if not await services.memory.server_answers():  # replicas share it: without it, memory splits
        server = services.settings.vector_server or ""
        body = {
            "ready": False,
            "reason": "vector server unreachable",
            **({"vector_server": server} if local else {}),
        }
        return JSONResponse(body, status_code=503)
    stream = services.stream.status if services.stream is not None else None
    if stream is not None and stream_blocks_readiness(services.settings.dingtalk_mode, stream):
        reason = f"stream {stream.state.value}: {stream.detail}"
        return JSONResponse({"ready": False, "reason": reason, "stream": stream.state.value}, status_code=503)
    memory = services.memory
    return JSONResponse(
        {
            "ready": True,  # a failing model endpoint is shown, not unready: people still get told
            "model_endpoint": services.assistant.health.status.public(details=local),
            "memory": "ok" if memory.available else "off",
            "embedding_dims": memory.embedding_dims,  # `dingbot doctor` compares it with its embedder
            **({"stream": stream.state.value} if stream is not None else {}),
        }
    )


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
