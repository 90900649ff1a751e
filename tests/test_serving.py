"""The request-head limits (api/serving.py), under real uvicorn, spoken to over raw loopback sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.serving import MAX_HEAD_BYTES, MAX_HEADERS, MAX_TARGET_BYTES, LimitedProtocol, server_config

PATIENCE = 10.0


async def _echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"ok {len(await request.body())}")


APP = Starlette(routes=[Route("/", _echo, methods=["GET", "POST"])])


@contextmanager
def _serving() -> Iterator[int]:
    server = uvicorn.Server(server_config(APP, "127.0.0.1", 0, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + PATIENCE
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start in time"
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=PATIENCE)


@pytest.fixture
def port() -> Iterator[int]:
    with _serving() as bound:
        yield bound


def _connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _answer(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _push(conn: socket.socket, size: int) -> tuple[int, bool]:
    """Send up to `size` header bytes; how many went out, and whether the server closed on us."""
    sent, chunk = 0, b"a" * 65536
    try:
        while sent < size:
            conn.sendall(chunk)
            sent += len(chunk)
    except (ConnectionResetError, BrokenPipeError):
        return sent, True
    return sent, False


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _head(size: int) -> bytes:
    """A GET whose request line + headers are exactly `size` bytes."""
    start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def test_a_head_at_the_limit_is_served_one_byte_over_is_refused(port: int) -> None:
    with _connect(port) as conn:
        conn.sendall(_head(MAX_HEAD_BYTES) + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _answer(conn)
    assert answer.count(b"HTTP/1.1 200 OK") == 2  # and the next request on the connection too
    with _connect(port) as conn:
        conn.sendall(_head(MAX_HEAD_BYTES + 1))
        answer = _answer(conn)
    assert _status(answer) == 431
    assert answer.endswith(f"request head larger than {MAX_HEAD_BYTES} bytes".encode())


def test_a_huge_header_is_refused_before_it_is_read() -> None:
    """The server answers 431 and closes after about MAX_HEAD_BYTES, not after the client's 200 MiB."""
    with _serving() as port, _connect(port) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: ")
        sent, closed = _push(conn, 200 * 1024 * 1024)
        answer = _answer(conn)
        # served again at once: a plain request on a new connection
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=PATIENCE).text == "ok 0"
    assert closed  # the server closed: a send failed (reset or broken pipe) long before 200 MiB
    # what was sent before the close is what the two kernels' socket buffers held (a few MiB on loopback)
    assert sent < 32 * 1024 * 1024
    if answer:  # the 431 may be lost to the reset of a client still sending
        assert _status(answer) == 431


def test_too_many_header_lines(port: int) -> None:
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1))
    with _connect(port) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        answer = _answer(conn)
    assert _status(answer) == 431
    assert answer.endswith(f"more than {MAX_HEADERS} header lines".encode())


def test_a_long_target(port: int) -> None:
    with _connect(port) as conn:
        conn.sendall(b"GET /" + b"a" * MAX_TARGET_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _answer(conn)
    assert _status(answer) == 414


def test_a_slow_head_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LimitedProtocol, "head_timeout_seconds", 0.5)
    with _serving() as port, _connect(port) as conn:
        started = time.monotonic()
        conn.sendall(b"GET / HTTP/1.1\r\n")
        for _ in range(40):  # one header byte every 0.1 s: never complete within the timeout
            try:
                conn.sendall(b"X")
            except OSError:
                break
            time.sleep(0.1)
        answer = _answer(conn)
        waited = time.monotonic() - started
    assert _status(answer) == 408
    assert waited < 4.0  # cut well before the client's 4 s of trickling ended (8 timeouts' worth)


def test_a_silent_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LimitedProtocol, "head_timeout_seconds", 0.5)
    with _serving() as port, _connect(port) as conn:
        assert _status(_answer(conn)) == 408


def test_a_body_is_not_counted_as_head(port: int) -> None:
    body = b"b" * (4 * MAX_HEAD_BYTES)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    with _connect(port) as conn:
        conn.sendall(head + body)
        answer = _answer(conn)
    assert _status(answer) == 200
    assert answer.endswith(b"ok %d" % len(body))


def test_refusals_are_logged_once_per_interval(port: int, caplog: pytest.LogCaptureFixture) -> None:
    from api import serving

    monkey = pytest.MonkeyPatch()
    monkey.setattr(serving, "REFUSALS", serving.RefusalLog(every_seconds=3600))
    try:
        caplog.set_level("WARNING", logger="api.serving")
        for _ in range(5):
            with _connect(port) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Secret-Looking: " + b"s" * MAX_HEAD_BYTES)
                assert _status(_answer(conn)) == 431
        assert serving.REFUSALS.total == 5
    finally:
        monkey.undo()
    lines = [r.getMessage() for r in caplog.records if r.name == "api.serving"]
    assert len(lines) == 1
    assert "from 127.0.0.1" in lines[0]
    assert "sss" not in lines[0]


def test_malformed_requests_are_counted_not_logged_each(port: int, caplog: pytest.LogCaptureFixture) -> None:
    """uvicorn warns once per malformed request; ours says it once per interval, with the count."""
    from api import serving

    monkey = pytest.MonkeyPatch()
    monkey.setattr(serving, "REFUSALS", serving.RefusalLog(every_seconds=3600))
    try:
        caplog.set_level("WARNING")
        for _ in range(5):
            with _connect(port) as conn:
                conn.sendall(b"NOT HTTP AT ALL\x00\x01\r\n\r\n")
                assert _status(_answer(conn)) == 400
        assert serving.REFUSALS.total == 5
    finally:
        monkey.undo()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [warnings[0]]
    assert "malformed HTTP request" in warnings[0]
