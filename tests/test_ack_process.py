"""ACK_PROCESS: callbacks are stored and acked by a process of their own; the service answers them.

The service is run as a real process (`python -m dingbot.server`), the acking process as its child; the
fakes are DingTalk's session webhook and, where needed, the model."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.front.passing import PEER_HEADER, TOKEN_HEADER, PeerFromFront
from tests.conftest import SECRET, free_port, subprocess_env
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.waiting import PATIENCE, wait_until

PASSWORD = "console-pass-123"
STARTUP_PATIENCE = 2 * PATIENCE  # a cold start imports the embedder, mem0 and LangChain


class Service:
    def __init__(self, process: subprocess.Popen[str], port: int, database: Path) -> None:
        self.process, self.port, self.database = process, port, database
        self.url = f"http://127.0.0.1:{port}"
        self.seen_acking: set[int] = set()  # every acking process a test saw: all gone once it stops
        self.stderr: str | None = None

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
        deadline = time.monotonic() + STARTUP_PATIENCE
        while True:
            try:
                if httpx.get(f"{running.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "server exited early"
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.1)
        yield running
    finally:
        stderr = running.stop()
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
        assert fake_dingtalk.requests == []
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
    with httpx.Client(base_url=service.url, timeout=PATIENCE) as browser:
        form = browser.get("/console/login")  # CONSOLE_ALLOWED_IPS=127.0.0.1: the service saw 127.0.0.1
        assert form.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed_in = browser.post("/console/login", data={"password": PASSWORD, "csrf": csrf[1]})
        assert signed_in.status_code == 303  # the form's body and the session cookie went through
        assert browser.get("/console").status_code == 200
    with sqlite3.connect(service.database) as conn:
        assert conn.execute("SELECT address, action FROM console_audit").fetchall() == [
            ("127.0.0.1", "login")
        ]
    refused = service.post(callback(fake_dingtalk.webhook(), "没签名"), signed=False)
    assert refused.status_code == 401
    assert httpx.get(f"{service.url}/readyz", timeout=PATIENCE).status_code == 200
    wait_until(
        lambda: 'outcome="refused_401"} 1.0' in httpx.get(f"{service.url}/metrics", timeout=PATIENCE).text,
        what="the refusal counted by the service",
    )


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
