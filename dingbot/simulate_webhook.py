"""`dingbot simulate`: the one-shot session webhook it hosts, and where it may listen.

The service posts replies to webhooks on DINGTALK_OAPI_BASE/DINGTALK_API_BASE, and in mock mode to any
address on this machine. So the webhook listens at DINGTALK_OAPI_BASE when that is a loopback address
(which then works with a real model too), else on a free loopback port (the service must be in mock mode).
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from api.dingtalk.reply import is_loopback_host
from dingbot.simulate_view import Part

if TYPE_CHECKING:
    from agent.settings.config import Settings

EXIT_REPLY, EXIT_NO_REPLY, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130
WEBHOOK_PATH = "/robot/sendBySession"
FILE_API_PATH = "/v1.0/robot/messageFiles/download"
OAUTH_PATH = "/v1.0/oauth2/accessToken"
DOWNLOAD_PATH = "/download/"
OK_ANSWER = b'{"errcode":0,"errmsg":"ok"}'


class SimulateError(Exception):
    """Stops the run with one line; `code` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_NO_REPLY) -> None:
        super().__init__(message)
        self.code = code


# --- the one-shot session webhook ---


class OneShotWebhook:
    """DingTalk's side of the session webhook: records posts to this run's session, answers errcode 0.
    It also plays the robot file API for the files this run sends (`files`: download code → bytes):
    `POST /v1.0/robot/messageFiles/download` answers a download URL on itself, served by GET."""

    def __init__(
        self, host: str, port: int, session: str, started: list[float], files: dict[str, bytes] | None = None
    ) -> None:
        self.parts: queue.Queue[Part] = queue.Queue()
        self.strays = 0  # posts to another session: a late reply to an earlier run
        self.files = files or {}
        self.downloads = 0  # files the service fetched
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *values: object) -> None:
                return

            def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                data = webhook.files.get(urlsplit(self.path).path.removeprefix(DOWNLOAD_PATH))
                if data is None:
                    self._answer(404, b"")
                    return
                webhook.downloads += 1
                self._answer(200, data, "application/octet-stream")

            def do_POST(self) -> None:
                arrived = time.perf_counter()
                length = self.headers.get("Content-Length") or "0"
                body = self.rfile.read(int(length) if length.isdigit() else 0)
                path = urlsplit(self.path).path
                if path == FILE_API_PATH:
                    self._download_url(body)
                    return
                if path == OAUTH_PATH:  # a service with app credentials pointed here (DINGTALK_API_BASE)
                    self._answer(200, b'{"accessToken":"simulate","expireIn":7200}')
                    return
                query = parse_qs(urlsplit(self.path).query)
                if query.get("session") == [session] and started:
                    webhook.parts.put(Part(arrived - started[0], body))
                else:
                    webhook.strays += 1
                self._answer(200, OK_ANSWER)

            def _download_url(self, body: bytes) -> None:
                try:
                    code = str(json.loads(body).get("downloadCode", ""))
                except (ValueError, AttributeError):
                    code = ""
                if code not in webhook.files:
                    self._answer(400, b'{"code":"invalidParameter.downloadCode","message":"unknown code"}')
                    return
                host = self.headers.get("Host") or f"127.0.0.1:{webhook.port}"  # as the service reached us
                url = f"http://{host}{DOWNLOAD_PATH}{code}"
                self._answer(200, json.dumps({"downloadUrl": url}).encode())

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type(
            "WebhookServer", (ThreadingHTTPServer,), {"address_family": family, "request_queue_size": 128}
        )
        self.server: ThreadingHTTPServer = server_class((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])  # the one chosen when asked for port 0
        self.thread = threading.Thread(target=self.server.serve_forever, name="simulate-webhook", daemon=True)

    def __enter__(self) -> OneShotWebhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def collect(self, deadline: float, quiet: float) -> list[Part]:
        """Wait until `deadline` (perf_counter) for the first part, then take parts until `quiet` passes."""
        parts: list[Part] = []
        while not parts:
            left = deadline - time.perf_counter()
            if left <= 0:
                return parts
            try:
                parts.append(self.parts.get(timeout=min(left, 0.25)))
            except queue.Empty:
                continue
        while True:
            try:
                parts.append(self.parts.get(timeout=quiet))
            except queue.Empty:
                return parts


# --- settings → where to send, where to listen ---


def suggested_base(avoid: set[int]) -> str:
    port = 9000
    while port in avoid:
        port += 1
    return f"http://127.0.0.1:{port}"


def webhook_address(settings: Settings, service: tuple[str, int]) -> tuple[str, int, str | None]:
    """(host, port, base) of the webhook to host: DINGTALK_OAPI_BASE when that is on this machine, else
    a free loopback port (port 0, base None: known once bound), which a mock-mode service accepts."""
    base = settings.dingtalk_oapi_base.rstrip("/")
    parts = urlsplit(base)
    host = parts.hostname or ""
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise SimulateError(f"DINGTALK_OAPI_BASE={base} has no valid port", EXIT_SETUP) from None
    if not is_loopback_host(host):
        return "127.0.0.1", 0, None
    avoid = {service[1], settings.port}
    how = (
        f"set DINGTALK_OAPI_BASE={suggested_base(avoid)} for both the service and simulate (e.g. in .env) "
        "and restart the service"
    )
    if scheme != "http":
        raise SimulateError(
            f"DINGTALK_OAPI_BASE is {base}: simulate hosts a plain http webhook, so {how}", EXIT_SETUP
        )
    service_host, service_port = service
    same_as_service = port == service_port and (
        is_loopback_host(service_host) or service_host in ("0.0.0.0", "::")  # noqa: S104
    )
    if same_as_service or port == settings.port:
        raise SimulateError(
            f"DINGTALK_OAPI_BASE ({host}:{port}) is the service's own address (PORT={settings.port}): "
            f"simulate needs another port for DingTalk's webhook, so {how}",
            EXIT_SETUP,
        )
    return ("127.0.0.1" if host.lower() == "localhost" else host.strip("[]")), port, base
