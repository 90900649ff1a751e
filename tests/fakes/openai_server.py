"""A local OpenAI-compatible endpoint (tests/fakes/servers.py's LocalServer): /v1/models, embeddings, chat
completions plain and streamed, function calling (tool calls whole and as streamed deltas), Azure paths,
scripted failures and holds."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.servers import LocalServer, Recorded


@dataclass
class Scripted:
    """One scripted answer. `status` 200 with `text` is a chat completion (streamed when asked)."""

    status: int = 200
    text: str = "你好"
    body: dict[str, Any] | None = None  # a raw JSON answer instead of a completion
    hold: threading.Event | None = None  # no answer until the test sets it (a model still thinking)
    error_code: str | None = None
    # function calling: [(name, arguments as JSON text)], answered as `tool_calls` (whole, or streamed
    # as deltas: the name first, then the arguments a few characters at a time); `text` is then ignored
    tool_calls: list[tuple[str, str]] | None = None


class FakeOpenAI(LocalServer):
    """An OpenAI-compatible endpoint: /v1/models, chat completions (plain and streamed), Azure paths.

    By default it answers any key, any path ending in a known route and any model. Stricter options:
    `api_key` (401 invalid_api_key for any other key), `v1_only` (404 outside /v1/ and /openai/, like a
    server whose base must end with /v1), `known_models_only` (404 model_not_found for a model not in
    `models`) and `deployments` (Azure: 404 DeploymentNotFound for any other deployment).
    """

    def __init__(
        self,
        models: tuple[str, ...] = ("gpt-4-turbo",),
        *,
        api_key: str | None = None,
        v1_only: bool = False,
        known_models_only: bool = False,
        deployments: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        self.models = models
        self.embeddings = True  # False: an endpoint without /embeddings (404), like many vLLM setups
        self.script: deque[Scripted] = deque()
        self.delay = 0.0  # seconds every unscripted chat completion takes
        self.echo = False  # unscripted completions answer "答复：<the last user message>"
        self.stream_piece_delay = 0.0  # seconds between the pieces (2 characters each) of a streamed answer
        # called (in the server's thread) with the text so far after each streamed piece is flushed: a test
        # can pace the stream by what the other side has seen, instead of by the clock
        self.after_piece: Callable[[str], None] | None = None
        self.api_key = api_key
        self.v1_only = v1_only
        self.known_models_only = known_models_only
        self.deployments = deployments
        self.usage = (1, 1)  # (prompt, completion) tokens every completion reports, streamed ones when asked

    def chats(self) -> list[Recorded]:
        return [r for r in self.requests if "/chat/completions" in r.path]

    def _refusal(self, request: Recorded, path: str) -> tuple[int, str, str] | None:
        """(status, code, message) when a strict option refuses the request, else None."""
        if self.api_key is not None:
            given = request.headers.get("api-key") or request.headers.get("authorization", "")
            if given.removeprefix("Bearer ") != self.api_key:
                return 401, "invalid_api_key", "Incorrect API key provided."
        if self.v1_only and not path.startswith(("/v1/", "/openai/")):
            return 404, "not_found", "404 page not found"
        if self.deployments is not None and path.startswith("/openai/deployments/"):
            deployment = path.split("/")[3]
            if deployment not in self.deployments:
                return (
                    404,
                    "DeploymentNotFound",
                    "The API deployment for this resource does not exist.",
                )
        if self.known_models_only and request.method == "POST" and request.body:
            model = request.json().get("model")
            if model is not None and model not in self.models:
                return 404, "model_not_found", f"The model `{model}` does not exist."
        return None

    def handle(self, handler: BaseHTTPRequestHandler, request: Recorded) -> None:
        path = request.path.split("?", 1)[0]
        refusal = self._refusal(request, path)
        if refusal is not None:
            status, code, message = refusal
            self.send_json(handler, status, {"error": {"message": message, "type": "error", "code": code}})
            return
        if request.method == "GET" and path.endswith("/models"):
            self.send_json(
                handler, 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
            )
            return
        if path.endswith("/embeddings") and self.embeddings:
            self.send_json(handler, 200, embeddings_answer(request))
            return
        if not path.endswith("/chat/completions"):
            self.send_json(handler, 404, {"error": {"message": "no such route", "code": "not_found"}})
            return
        if self.script:
            step = self.script.popleft()
        else:
            step = Scripted()
            if self.delay:
                time.sleep(self.delay)
            if self.echo:
                users = [m for m in request.json().get("messages", []) if m.get("role") == "user"]
                step.text = "答复：" + (str(users[-1].get("content", "")) if users else "")
        if step.hold is not None and not self.hold(step.hold, handler):
            return
        if step.body is not None:
            self.send_json(handler, step.status, step.body)
            return
        if step.status != 200:
            self.send_json(
                handler,
                step.status,
                {"error": {"message": f"scripted {step.status}", "type": "error", "code": step.error_code}},
            )
            return
        model = request.json().get("model") or "deployment"
        if step.tool_calls is not None:
            if request.json().get("stream"):
                self._stream_calls(handler, step.tool_calls, model)
            else:
                self.send_json(handler, 200, _calls_completion(step.tool_calls, model))
        elif request.json().get("stream"):
            wants_usage = bool((request.json().get("stream_options") or {}).get("include_usage"))
            usage = self.usage if wants_usage else None
            self._stream(handler, step.text, model, self.stream_piece_delay, self.after_piece, usage)
        else:
            self.send_json(handler, 200, _completion(step.text, model, self.usage))

    @staticmethod
    def _stream_calls(handler: BaseHTTPRequestHandler, calls: list[tuple[str, str]], model: str) -> None:
        """Tool calls as OpenAI streams them: per call a delta with its id and name, then its arguments
        in pieces of 5 characters (index-keyed), then finish_reason tool_calls."""
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()

        def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            handler.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
            handler.wfile.flush()

        send({"role": "assistant", "content": None})
        for index, (name, arguments) in enumerate(calls):
            first = {"index": index, "id": f"call_{index}", "type": "function"}
            send({"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]})
            for start in range(0, len(arguments), 5):
                piece = arguments[start : start + 5]
                send({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        send({}, "tool_calls")
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()
        handler.close_connection = True

    @staticmethod
    def _stream(
        handler: BaseHTTPRequestHandler,
        text: str,
        model: str,
        piece_delay: float = 0.0,
        after_piece: Callable[[str], None] | None = None,
        usage: tuple[int, int] | None = None,
    ) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        pieces = [text[i : i + 2] for i in range(0, len(text), 2)]
        so_far = ""
        for piece in pieces:
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}
                ],
            }
            handler.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
            handler.wfile.flush()
            so_far += piece
            if after_piece is not None:
                after_piece(so_far)
            if piece_delay:
                time.sleep(piece_delay)
        done = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        handler.wfile.write(f"data: {json.dumps(done)}\n\n".encode())
        if usage is not None:  # stream_options.include_usage: a last chunk with no choices, as OpenAI sends
            last = {**done, "choices": [], "usage": _usage(usage)}
            handler.wfile.write(f"data: {json.dumps(last)}\n\n".encode())
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()
        handler.close_connection = True


def _usage(tokens: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": tokens[0], "completion_tokens": tokens[1], "total_tokens": sum(tokens)}


def fake_embedding(text: str, dims: int = 64) -> list[float]:
    """A deterministic embedding: character bigrams hashed into `dims` buckets (shared words → close)."""
    import hashlib
    import math

    vector = [0.0] * dims
    for gram in [text[i : i + 2] for i in range(max(1, len(text) - 1))]:
        vector[int(hashlib.md5(gram.encode()).hexdigest(), 16) % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def embeddings_answer(request: Recorded) -> dict[str, Any]:
    """An /embeddings answer: a fake vector for each input text."""
    texts = request.json()["input"]
    texts = [texts] if isinstance(texts, str) else texts
    data = [{"object": "embedding", "index": i, "embedding": fake_embedding(t)} for i, t in enumerate(texts)]
    return {"object": "list", "data": data, "model": "fake-embedding"}


def _calls_completion(calls: list[tuple[str, str]], model: str) -> dict[str, Any]:
    tool_calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for i, (name, arguments) in enumerate(calls)
    ]
    message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _completion(text: str, model: str, usage: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": _usage(usage),
    }
