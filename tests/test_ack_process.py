"""ACK_PROCESS: callbacks are stored and acked by a process of their own; the service answers them.

The service is run as a real process (`python -m dingbot.server`), the acking process as its child; the
fakes are DingTalk's session webhook and, where needed, the model."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from agent.messages import IncomingMessage
from agent.settings.config import Settings
from api.delivery.inbox import Inbox
from api.dingtalk.parse import parse_callback
from api.front.passing import PEER_HEADER, TOKEN_HEADER, PeerFromFront
from tests.conftest import SECRET, free_port, serve, subprocess_env
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.waiting import PATIENCE, until_served, wait_until

PASSWORD = "console-pass-123"
STARTUP_PATIENCE = 2 * PATIENCE  # a cold start imports the embedder, mem0 and LangChain


class Service:
    def __init__(self, process: subprocess.Popen[str], port: int, database: Path) -> None:
        self.process, self.port, self.database = process, port, database
        self.url = f"http://127.0.0.1:{port}"
        self.seen_acking: set[int] = set()  # every acking process a test saw: all gone once it stops
        self.stderr: str | None = None
        self.killed = False  # a test killed it: no clean stop to check

    def stop(self) -> str:
        """SIGTERM (SIGCONT first: a test may leave it stopped); its stderr. Once."""
        if self.stderr is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            _, self.stderr = self.process.communicate(timeout=PATIENCE)
        return self.stderr

    def post(self, body: dict[str, object], *, signed: bool = True) -> httpx.Response:
        headers = signed_headers(SECRET) if signed else {"content-type": "application/json"}
        return httpx.post(
            f"{self.url}/dingtalk/callback", content=encode(body), headers=headers, timeout=PATIENCE
        )

    def acking_pids(self) -> list[int]:
        found: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            found += [int(pid) for pid in (task / "children").read_text().split()]
        self.seen_acking.update(found)
        return found

    def inbox(self) -> dict[str, str]:
        with sqlite3.connect(self.database) as conn:
            return dict(conn.execute("SELECT msg_id, state FROM inbox").fetchall())


@pytest.fixture
def service(tmp_path: Path, fake_dingtalk: FakeDingTalk) -> Iterator[Service]:
    port = free_port()
    database = tmp_path / "bot.db"
    env = subprocess_env(
        FORCE_MOCK_OPENAI="1",
        SECRET=SECRET,
        HOST="127.0.0.1",
        PORT=str(port),
        DATABASE_PATH=str(database),
        DINGTALK_OAPI_BASE=fake_dingtalk.url,
        CONSOLE_PASSWORD=PASSWORD,
        CONSOLE_ALLOWED_IPS="127.0.0.1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "dingbot.server"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    running = Service(process, port, database)
    try:
        until_served(process, f"{running.url}/healthz", STARTUP_PATIENCE)
        yield running
    finally:
        stderr = running.stop()
    if not running.killed:
        assert process.returncode == 0, stderr
        assert "DingHook stopped" in stderr
    assert SECRET not in stderr
    assert running.seen_acking
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in running.seen_acking),
        what="the acking process gone with the service",
    )


def test_callbacks_are_acked_and_kept_while_the_answering_process_is_frozen(
    service: Service, fake_dingtalk: FakeDingTalk
) -> None:
    [front] = service.acking_pids()
    service.process.send_signal(signal.SIGSTOP)  # the process that answers does nothing now
    try:
        bodies = [
            callback(fake_dingtalk.webhook(f"w{n}"), f"冻结时的第{n}条", msgId=f"msgFrozen{n}")
            for n in range(5)
        ]
        for body in bodies:
            response = service.post(body)
            assert response.status_code == 200
            assert response.json() == {"msgtype": "empty"}
        assert service.inbox() == {f"msgFrozen{n}": "processing" for n in range(5)}
        duplicate = service.post(bodies[0])  # dedupe is the acking process's too
        assert duplicate.json() == {"msgtype": "empty"}
    finally:
        service.process.send_signal(signal.SIGCONT)
    fake_dingtalk.wait_for(5)
    wait_until(lambda: set(service.inbox().values()) == {"done"}, what="every message answered")
    replies = [r.json()["text"]["content"] for r in fake_dingtalk.requests]
    for n in range(5):
        assert sum(f"冻结时的第{n}条" in reply for reply in replies) == 1, replies
    assert service.acking_pids() == [front]
    metrics = httpx.get(f"{service.url}/metrics", timeout=PATIENCE).text  # passed on to the service
    assert 'dingbot_callbacks_total{outcome="accepted"} 5.0' in metrics
    assert 'dingbot_callbacks_total{outcome="duplicate"} 1.0' in metrics


def test_the_acking_process_is_started_again_when_it_dies(
    service: Service, fake_dingtalk: FakeDingTalk
) -> None:
    [first] = service.acking_pids()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: first not in service.acking_pids(), what="the acking process gone")
    # The service keeps PORT's listening socket: this connection waits for the new acking process.
    response = service.post(callback(fake_dingtalk.webhook(), "重启之后", msgId="msgAfterRestart"))
    assert response.json() == {"msgtype": "empty"}
    [second] = service.acking_pids()
    assert second != first
    [reply] = fake_dingtalk.wait_for(1)
    assert "重启之后" in reply.json()["text"]["content"]
    assert "the acking process exited (code -9); starting it again" in service.stop()


def test_other_requests_reach_the_service_with_the_client_s_own_address(
    service: Service, fake_dingtalk: FakeDingTalk
) -> None:
    service.acking_pids()
    # A client's own x-dingbot-* headers are dropped: only the acking process names the client.
    forged = {"x-dingbot-peer": "10.9.9.9 1", "x-dingbot-front": "a-guess", "x-dingbot-scheme": "https"}
    with httpx.Client(base_url=service.url, timeout=PATIENCE, headers=forged) as browser:
        form = browser.get("/console/login")  # CONSOLE_ALLOWED_IPS=127.0.0.1: the service saw 127.0.0.1
        assert form.status_code == 200
        assert "secure" not in form.headers["set-cookie"].lower()  # plain http, whatever was claimed
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed_in = browser.post("/console/login", data={"password": PASSWORD, "csrf": csrf[1]})
        assert signed_in.status_code == 303  # the form's body and the session cookie went through
        assert browser.get("/console").status_code == 200
    # Someone else, without the session's cookie, is not signed in: nothing is kept between requests.
    stranger = httpx.get(f"{service.url}/console", timeout=PATIENCE)
    assert (stranger.status_code, stranger.headers["location"]) == (303, "/console/login")
    with sqlite3.connect(service.database) as conn:
        assert conn.execute("SELECT address, action FROM console_audit").fetchall() == [
            ("127.0.0.1", "login")
        ]
    # Behind a TLS proxy on this machine (uvicorn trusts its X-Forwarded-Proto from 127.0.0.1), the
    # console's cookie stays Secure: the scheme is passed on too.
    behind_tls = httpx.get(
        f"{service.url}/console/login", headers={"x-forwarded-proto": "https"}, timeout=PATIENCE
    )
    assert "secure" in behind_tls.headers["set-cookie"].lower()
    refused = service.post(callback(fake_dingtalk.webhook(), "没签名"), signed=False)
    assert refused.status_code == 401
    assert httpx.get(f"{service.url}/readyz", timeout=PATIENCE).status_code == 200
    wait_until(
        lambda: 'outcome="refused_401"} 1.0' in httpx.get(f"{service.url}/metrics", timeout=PATIENCE).text,
        what="the refusal counted by the service",
    )


def test_the_acking_process_stops_when_the_service_is_killed(service: Service) -> None:
    [front] = service.acking_pids()
    service.killed = True
    service.process.kill()  # SIGKILL: no shutdown code runs; the event line closes with the process
    service.process.wait(PATIENCE)
    wait_until(lambda: not Path(f"/proc/{front}").exists(), what="the acking process gone")
    with socket.socket() as probe:  # PORT is free for the next start
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", service.port))


def test_the_acking_process_refuses_to_run_on_other_settings_than_the_service(tmp_path: Path) -> None:
    """Started again after a crash, it would read a .env edited since: it must not ack with other settings
    (another database, SECRET or allowlist) than the service answers with."""
    command = [sys.executable, "-m", "dingbot.front", "--listen-fd=0", "--events-fd=0", "--service=x"]
    env = subprocess_env(FORCE_MOCK_OPENAI="1", DATABASE_PATH=str(tmp_path / "bot.db"))
    by_hand = subprocess.run(command, env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert by_hand.returncode == 2
    assert "DINGBOT_FRONT_TOKEN is not set" in by_hand.stderr
    env.update(DINGBOT_FRONT_TOKEN="t", DINGBOT_FRONT_SETTINGS="the service's, before .env changed")
    changed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert changed.returncode == 2
    assert "the settings (environment or .env) changed since the service started" in changed.stderr
    assert not (tmp_path / "bot.db").exists()  # refused before touching anything


def _client_app() -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse(
            {"client": request.client.host if request.client else None, "headers": dict(request.headers)}
        )

    return Starlette(routes=[Route("/", whoami)])


def test_a_client_address_is_believed_only_with_the_acking_process_s_token() -> None:
    app = PeerFromFront(_client_app(), token="the-token")
    with TestClient(app) as client:  # type: ignore[arg-type]
        peer, token = PEER_HEADER.decode(), TOKEN_HEADER.decode()
        passed_on = client.get("/", headers={peer: "10.1.2.3 5555", token: "the-token"}).json()
        assert passed_on["client"] == "10.1.2.3"
        forged = client.get("/", headers={peer: "10.1.2.3 5555", token: "a-guess"}).json()
        assert forged["client"] == "testclient"
        no_token = client.get("/", headers={peer: "10.1.2.3 5555"}).json()
        assert no_token["client"] == "testclient"
        for seen in (passed_on, forged, no_token):  # never seen by the app, believed or not
            assert peer not in seen["headers"]
            assert token not in seen["headers"]


def test_a_message_announced_after_a_resume_took_it_is_answered_once(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    """The acking process claims, then announces; a resume (after a database fault) may take the message
    between the two. The announcement then checks the row (compare-and-set) instead of running it again."""
    settings = real_settings()
    fake_openai.echo = True
    with serve(settings) as app:
        services = app.server.config.app.state.services
        loop = app.server.servers[0].get_loop()
        inbox = Inbox(services.database, lease_seconds=settings.claim_lease_seconds)
        first = parse_callback(encode(callback(fake_dingtalk.webhook("a"), "先恢复再通知", msgId="msgRace")))
        claimed_at = time.time()

        async def claim_then_resume() -> None:
            assert await inbox.claim(first, now=claimed_at)
            assert await services.dispatcher.resume(all_processing=True, retry_after_seconds=0.0) == 1

        asyncio.run_coroutine_threadsafe(claim_then_resume(), loop).result(PATIENCE)
        fake_dingtalk.wait_for(1)

        def asked() -> int:
            return sum("先恢复再通知" in r.body.decode() for r in fake_openai.chats())

        wait_until(lambda: asked() == 2, what="the answer, then the facts learned from it")

        async def announce(message: IncomingMessage, at: float) -> None:
            check = services.dispatcher.announced(message, at)
            if check is not None:
                await check

        asyncio.run_coroutine_threadsafe(announce(first, claimed_at), loop).result(PATIENCE)
        wait_until(lambda: services.dispatcher.in_flight == 0, what="nothing running")
        assert asked() == 2  # a second run would ask the model again (its reply would be dropped)

        second = parse_callback(encode(callback(fake_dingtalk.webhook("b"), "之后的一条", msgId="msgAfter")))

        async def claim_then_announce() -> None:  # claimed after the resume: run at once, no check
            now = time.time()
            assert await inbox.claim(second, now=now)
            assert services.dispatcher.announced(second, now) is None

        asyncio.run_coroutine_threadsafe(claim_then_announce(), loop).result(PATIENCE)
        fake_dingtalk.wait_for(2)
    assert [r.path.rsplit("=", 1)[1] for r in fake_dingtalk.requests] == ["a", "b"]
