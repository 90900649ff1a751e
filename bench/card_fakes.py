"""The fakes of bench/card_stream.py: a streaming OpenAI-compatible model and DingTalk's card and token
endpoints, on threads in the bench's own process, stamping what they do with its perf_counter."""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from bench.settings import HOST

TOKEN_PATTERN = re.compile(r"cardbench-\d{6}")
CLIENT_ID = "dingbenchcardapp"
CLIENT_SECRET = "bench-app-secret-not-for-production"  # a throwaway AppSecret
TEMPLATE_ID = "bench-card-template.schema"
MODEL = "bench-model"
API_KEY = "sk-bench-not-a-real-key"
EXTRACTION_WAIT_S = 3.0  # after a finished card, how long to wait for its fact extraction request
CARD_CALLS = {
    ("POST", "/v1.0/card/instances"): "create",
    ("POST", "/v1.0/card/instances/deliver"): "deliver",
    ("PUT", "/v1.0/card/streaming"): "update",
    ("PUT", "/v1.0/card/instances"): "finish",
}


def token(n: int) -> str:
    return f"cardbench-{n:06d}"


# --- the fakes: threads in this process, times in this process's perf_counter ---


class _Fake(Protocol):
    def handle(self, handler: _Handler, method: str, path: str, body: bytes) -> None: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 512  # the default backlog of 5 resets connections in a burst

    def __init__(self, fake: _Fake) -> None:
        super().__init__((HOST, 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the service's httpx client expects
    disable_nagle_algorithm = True  # small writes (SSE pieces, headers then body) go out at once
    server: _Server

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            self.server.fake.handle(self, self.command, self.path.split("?", 1)[0], body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = _dispatch

    def answer(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextlib.contextmanager
def serving(fake: _Fake, name: str) -> Iterator[str]:
    """Serve `fake` on a free loopback port in a thread; yield its base URL; stop it on the way out."""
    server = _Server(fake)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _token_in(request: dict[str, Any]) -> str:
    """The message token in the request's last user message (else anywhere in it); "" if none."""
    messages = request.get("messages")
    users = [m for m in messages if m.get("role") == "user"] if isinstance(messages, list) else []
    for text in (str(users[-1].get("content", "")) if users else "", json.dumps(request, ensure_ascii=False)):
        found = TOKEN_PATTERN.findall(text)
        if found:
            return str(found[-1])
    return ""


def _chunk(model: str, delta: dict[str, str], finish_reason: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()


@dataclass
class ModelAnswer:
    """One streamed answer as the fake model wrote it (perf_counter seconds)."""

    requested_at: float
    first_piece_at: float = math.nan
    last_piece_at: float = math.nan
    pieces: int = 0


class FakeModel:
    """OpenAI-compatible chat completions: streamed answers of `pieces` pieces `delay` s apart (the first
    piece carries the message's token); non-streamed requests get a `{"facts": []}` completion."""

    def __init__(self, pieces: int, delay: float) -> None:
        self.pieces = pieces
        self.delay = delay
        self.answers: dict[str, ModelAnswer] = {}  # token -> the first streamed answer for it
        self.streams: Counter[str] = Counter()  # token -> streamed requests (a retry would show as 2)
        self.extractions: dict[str, float] = {}  # token -> arrival of its non-streamed request
        self.other: Counter[str] = Counter()  # requests that were neither
        self._cond = threading.Condition()

    def handle(self, handler: _Handler, method: str, path: str, body: bytes) -> None:
        at = time.perf_counter()
        if method == "GET" and path.endswith("/models"):
            handler.answer(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            with self._cond:
                self.other[f"{method} {path}"] += 1
            handler.answer(404, {"error": {"message": "no such route", "code": "not_found"}})
            return
        request = json.loads(body or b"{}")
        model, key = str(request.get("model") or MODEL), _token_in(request)
        if request.get("stream"):
            self._stream(handler, key, model, at)
            return
        with self._cond:
            self.extractions.setdefault(key, at)
            self._cond.notify_all()
        handler.answer(
            200,
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": '{"facts": []}'},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    def _stream(self, handler: _Handler, key: str, model: str, at: float) -> None:
        answer = ModelAnswer(requested_at=at)
        with self._cond:
            self.streams[key] += 1
            answer = self.answers.setdefault(key, answer)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        out = handler.wfile
        out.write(_chunk(model, {"role": "assistant", "content": ""}))  # as OpenAI: the role comes first
        for i in range(self.pieces):
            if i:
                time.sleep(self.delay)
            text = f"{key} 第{i + 1}句。" if i == 0 else f"第{i + 1}句。"
            now = time.perf_counter()
            out.write(_chunk(model, {"content": text}))
            if i == 0:
                answer.first_piece_at = now
            answer.last_piece_at = now
            answer.pieces += 1
        out.write(_chunk(model, {}, "stop") + b"data: [DONE]\n\n")

    def wait_extraction(self, key: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: key in self.extractions, timeout)


@dataclass
class CardCall:
    name: str  # create | deliver | update | finish
    at: float  # perf_counter seconds at arrival
    track: str  # outTrackId
    finalize: bool = False
    chars: int = 0
    flow_status: str = ""


@dataclass
class FakeDingTalk:
    """The access token, the four card calls and the session webhook; records card calls by outTrackId
    and maps each card to the message token its updates show."""

    calls: list[CardCall] = field(default_factory=list)
    track_token: dict[str, str] = field(default_factory=dict)
    finished: dict[str, CardCall] = field(default_factory=dict)  # token -> its card's finish call
    plain: Counter[str] = field(default_factory=Counter)  # token -> plain replies (webhook or OpenAPI)
    tokens_issued: int = 0
    other: Counter[str] = field(default_factory=Counter)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def handle(self, handler: _Handler, method: str, path: str, body: bytes) -> None:
        at = time.perf_counter()
        if method == "POST" and path == "/v1.0/oauth2/accessToken":
            with self._cond:
                self.tokens_issued += 1
                issued = self.tokens_issued
            handler.answer(200, {"accessToken": f"bench-token-{issued}", "expireIn": 7200})
            return
        name = CARD_CALLS.get((method, path))
        if name is not None:
            self._card_call(name, at, json.loads(body or b"{}"))
            handler.answer(200, {"success": True, "result": True})
            return
        if method == "POST" and (path == "/robot/sendBySession" or path.startswith("/v1.0/robot/")):
            found = set(TOKEN_PATTERN.findall(body.decode("utf-8", errors="replace"))) or {""}
            with self._cond:
                self.plain.update(found)
                self._cond.notify_all()
            if path.startswith("/v1.0/robot/"):
                handler.answer(200, {"processQueryKey": "bench"})
            else:
                handler.answer(200, {"errcode": 0, "errmsg": "ok"})
            return
        with self._cond:
            self.other[f"{method} {path}"] += 1
        handler.answer(404, {"code": "notFound", "message": "no such route"})

    def _card_call(self, name: str, at: float, payload: dict[str, Any]) -> None:
        call = CardCall(name, at, str(payload.get("outTrackId", "")))
        found: list[str] = []
        if name == "update":
            content = str(payload.get("content", ""))
            call.finalize, call.chars = bool(payload.get("isFinalize")), len(content)
            found = TOKEN_PATTERN.findall(content)
        elif name == "finish":
            params = (payload.get("cardData") or {}).get("cardParamMap") or {}
            call.flow_status = str(params.get("flowStatus", ""))
        with self._cond:
            self.calls.append(call)
            if found:
                self.track_token.setdefault(call.track, found[0])
            key = self.track_token.get(call.track)
            if name == "finish" and key:
                self.finished.setdefault(key, call)
            self._cond.notify_all()

    def wait_done(self, key: str, timeout: float) -> bool:
        """Until the message's card is finished, or a plain reply for it came instead."""
        with self._cond:
            return self._cond.wait_for(lambda: key in self.finished or key in self.plain, timeout)

    def card_of(self, key: str) -> list[CardCall]:
        with self._cond:
            tracks = {track for track, t in self.track_token.items() if t == key}
            return [call for call in self.calls if call.track in tracks]
