"""A lean HTTP/1.1 load generator for bench/throughput.py: keep-alive connections on asyncio streams
(uvloop when installed), every request's bytes built before the clock starts.

A general client (httpx) spends more CPU per request than the endpoints it measures; on a 2-core machine
that CPU is taken from the service. This one writes prebuilt bytes and reads a status line, the headers
and a Content-Length body, nothing more: enough for our own endpoints on 127.0.0.1, not a general client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]


@dataclass
class Outcome:
    index: int
    sent_at: float  # time.time() when the request was written
    latency_ms: float | None  # None on a transport error
    status: int
    body: bytes


def encode(url: str, request: Request) -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(request.body)}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def exchange(self, data: bytes) -> tuple[int, bytes]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


async def _fire(url: str, payloads: Sequence[bytes], connections: int, rate: float) -> list[Outcome]:
    """Send every payload; closed loop over `connections` when rate is 0, else one every 1/rate s."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(url))
    outcomes: list[Outcome] = []

    async def one(index: int) -> None:
        connection = await pool.get()
        sent_at, started = time.time(), time.perf_counter_ns()
        try:
            status, body = await connection.exchange(payloads[index])
        except (OSError, asyncio.IncompleteReadError, ValueError):  # an outcome without a latency
            connection.close()
            outcomes.append(Outcome(index, sent_at, None, 0, b""))
            pool.put_nowait(await Connection.open(url))
            return
        outcomes.append(Outcome(index, sent_at, (time.perf_counter_ns() - started) / 1e6, status, body))
        pool.put_nowait(connection)

    if rate <= 0:
        cursor = iter(range(len(payloads)))

        async def worker() -> None:
            for index in cursor:
                await one(index)

        await asyncio.gather(*(worker() for _ in range(connections)))
    else:
        tasks = []
        start = time.perf_counter()
        for index in range(len(payloads)):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(index)))
        await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().close()
    outcomes.sort(key=lambda outcome: outcome.index)
    return outcomes


def run(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop
    except ImportError:  # not on Windows; the default loop does the same, a little slower
        return asyncio.run(coro_factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_factory())


def fire(url: str, payloads: Sequence[bytes], *, connections: int, rate: float = 0.0) -> list[Outcome]:
    """POST every prebuilt payload (see `encode`) to url; the outcomes in payload order."""
    return run(lambda: _fire(url, payloads, connections, rate))
