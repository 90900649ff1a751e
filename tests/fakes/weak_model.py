"""A local OpenAI-compatible server that behaves like a small instruct model on llama.cpp or vLLM, as
found against a real one: it honours `max_tokens` and ignores `max_completion_tokens`, runs on until a
cap and then says `finish_reason: length`, refuses a prompt beyond its context with HTTP 400
`context_length_exceeded`, answers the memory extraction with prose instead of JSON, tells its context
length (llama.cpp's /props, vLLM's max_model_len), and counts the clients that left before it finished.

A token is one character of message text here: simple to reason about in tests.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.openai_server import embeddings_answer
from tests.fakes.servers import LocalServer, Recorded

RUNAWAY = "这是一个非常长的回答，模型停不下来。"
EXTRACTION_MARKER = "facts"  # the extraction prompt asks for {"facts": [...]}


class WeakModel(LocalServer):
    def __init__(self, *, n_ctx: int = 4096, model: str = "qwen2.5-0.5b-instruct") -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.model = model
        self.answer: str | None = None  # None: run on until a cap (the context, or max_tokens)
        self.own_limit = 4000  # the most it generates when nothing caps it
        self.token_seconds = 0.0  # generation time per token
        self.tell_context = "props"  # "props" (llama.cpp), "models" (vLLM) or "" (neither)
        self.json_extraction = False  # False: the extraction gets prose, like a weak model
        self.json_on_repair = True  # the second try, told its output was not JSON, gets it right
        self.extraction_facts: list[str] = []
        self.context_refusals = 0
        self.disconnects = 0  # streamed answers the client left before the end
        self.abandoned = 0  # answers generated in full for a client that was gone
        self._lock_counts = threading.Lock()

    # --- what tests read ---

    def chats(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?", 1)[0].endswith("/chat/completions")]

    def answers(self) -> list[dict[str, Any]]:
        """The bodies of the chat requests that were not memory extraction."""
        return [r.json() for r in self.chats() if not _is_extraction(r.json())]

    def extractions(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.chats() if _is_extraction(r.json())]

    # --- the server ---

    def handle(self, handler: BaseHTTPRequestHandler, request: Recorded) -> None:
        path = request.path.split("?", 1)[0]
        if request.method == "GET" and path.endswith("/props"):
            if self.tell_context != "props":
                self.send_json(handler, 404, {"error": {"message": "not found"}})
                return
            self.send_json(handler, 200, {"default_generation_settings": {"n_ctx": self.n_ctx}})
            return
        if request.method == "GET" and path.endswith("/models"):
            entry: dict[str, Any] = {"id": self.model, "object": "model"}
            if self.tell_context == "models":
                entry["max_model_len"] = self.n_ctx
            self.send_json(handler, 200, {"object": "list", "data": [entry]})
            return
        if path.endswith("/embeddings"):
            self.send_json(handler, 200, embeddings_answer(request))
            return
        if not path.endswith("/chat/completions"):
            self.send_json(handler, 404, {"error": {"message": "no such route", "code": "not_found"}})
            return
        body = request.json()
        prompt_tokens = sum(len(_content(m)) for m in body.get("messages", []))
        cap = body.get("max_tokens")  # max_completion_tokens is ignored, as by several servers
        reserved = cap if isinstance(cap, int) else 0
        if prompt_tokens + reserved > self.n_ctx:
            with self._lock_counts:
                self.context_refusals += 1
            self.send_json(
                handler,
                400,
                {
                    "error": {
                        "code": "context_length_exceeded",
                        "type": "invalid_request_error",
                        "message": f"This model's maximum context length is {self.n_ctx} tokens. However, "
                        f"you requested {prompt_tokens + reserved} tokens.",
                    }
                },
            )
            return
        text, finish = self._generate(body, prompt_tokens, cap)
        if body.get("stream"):
            self._stream(handler, text, finish)
        else:
            self._whole(handler, text, finish, prompt_tokens)

    def _generate(self, body: dict[str, Any], prompt_tokens: int, cap: Any) -> tuple[str, str]:
        limit = min(self.own_limit, self.n_ctx - prompt_tokens)
        if isinstance(cap, int):
            limit = min(limit, cap)
        if _is_extraction(body):
            repair = len(body.get("messages", [])) > 2  # told that its last output was not JSON
            if self.json_extraction or (repair and self.json_on_repair):
                text = json.dumps({"facts": self.extraction_facts}, ensure_ascii=False)
            else:
                text = "好的，我会记住这些信息：用户提到了一些事情。"
        elif self.answer is not None:
            text = self.answer
        else:
            text = (RUNAWAY * (limit // len(RUNAWAY) + 1))[:limit]
        if len(text) > limit:
            return text[:limit], "length"
        return text, "length" if self.answer is None and not _is_extraction(body) else "stop"

    def _whole(self, handler: BaseHTTPRequestHandler, text: str, finish: str, prompt_tokens: int) -> None:
        if self.token_seconds:
            time.sleep(self.token_seconds * len(text))  # generated in full, whoever is still listening
        payload = {
            "id": "chatcmpl-weak",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(text),
                "total_tokens": prompt_tokens + len(text),
            },
        }
        try:
            self.send_json(handler, 200, payload)
        except (BrokenPipeError, ConnectionResetError):
            with self._lock_counts:
                self.abandoned += 1

    def _stream(self, handler: BaseHTTPRequestHandler, text: str, finish: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            for start in range(0, len(text), 4):
                piece = text[start : start + 4]
                chunk = {
                    "id": "chatcmpl-weak",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": self.model,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                handler.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
                handler.wfile.flush()
                if self.token_seconds:
                    time.sleep(self.token_seconds * len(piece))
            done = {
                "id": "chatcmpl-weak",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": self.model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            }
            handler.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client left: a real server stops here
            with self._lock_counts:
                self.disconnects += 1


def _content(message: dict[str, Any]) -> str:
    content = message.get("content", "")
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def _is_extraction(body: dict[str, Any]) -> bool:
    return any(
        EXTRACTION_MARKER in _content(m) for m in body.get("messages", []) if m.get("role") == "system"
    )
