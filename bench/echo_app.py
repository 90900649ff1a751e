"""Baseline for bench/ack_latency.py: the cheapest FastAPI endpoint, served like the real service.

`python -m bench.echo_app --port N` serves `POST /echo` on 127.0.0.1:N with the same uvicorn settings
as `dingbot.server` (api/serving.py: one process, the request-head limits, no access log). The endpoint
reads the body and answers `{"msgtype": "empty"}`, so its latency is what FastAPI + uvicorn cost alone.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.serving import server_config

EMPTY_ACK = {"msgtype": "empty"}

app = FastAPI(title="bench-echo", docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/echo")
async def echo(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse(EMPTY_ACK)


@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    config = server_config(app, "127.0.0.1", args.port)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
