"""Hermetic fixtures: no test reads the developer's environment or leaves loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from agent.settings.config import Settings
from agent.storage.engine import Engine
from agent.storage.postgres import PostgresEngine
from api.app import create_app
from api.serving import server_config
from tests import network_guard
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.servers import FakeDingTalk
from tests.postgres import RunDatabase, require_server
from tests.waiting import PATIENCE

LIVE = os.environ.get("DINGBOT_LIVE_TESTS") == "1"
if not LIVE:
    network_guard.install()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(proxy, None)

SECRET = "this is a secret"  # the protocol doc's test vector secret
ROOT = Path(__file__).resolve().parent.parent


def subprocess_env(**extra: str) -> dict[str, str]:
    """A minimal environment for a child Python: the repo importable and the network guard loaded."""
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'subprocess_guard'}",
        "NO_PROXY": "127.0.0.1,localhost",
        **extra,
    }


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the developer's shell or a .env file."""
    settings_names = {name.upper() for name in Settings.model_fields}
    for name in list(os.environ):
        if name.upper() in settings_names or name.startswith(("OPENAI_", "DINGTALK_", "EMBEDDING_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def azure_host(monkeypatch: pytest.MonkeyPatch) -> str:
    """Resolve an Azure-looking host name to loopback, so the Azure branch runs over real HTTP here."""
    host = "my-res.openai.azure.com"
    real = socket.getaddrinfo

    def resolve(name: Any, *args: Any, **kwargs: Any) -> Any:
        named = name.decode() if isinstance(name, bytes) else name
        return real("127.0.0.1" if named == host else name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return host


def free_port() -> int:
    """A loopback port nothing listens on (for a server a test starts, or one it must find closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def fake_dingtalk() -> Iterator[FakeDingTalk]:
    server = FakeDingTalk().start()
    yield server
    server.stop()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[RunDatabase]:
    """This run's PostgreSQL database, dropped at the end (skips or fails when none answers)."""
    require_server()
    database = RunDatabase()
    database.create()
    yield database
    database.drop()


ENGINES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres_only: about PostgreSQL's own behaviour (errors, a server)")
    config.addinivalue_line("markers", "sqlite_only: about SQLite's own files (what is left on disk)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        marked = metafunc.definition.get_closest_marker
        engines = ENGINES
        if marked("postgres_only") or marked("sqlite_only"):
            engines = ENGINES[1:] if marked("postgres_only") else ENGINES[:1]
        metafunc.parametrize("database_url", engines, indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Every test that stores anything runs on both engines: None (SQLite at DATABASE_PATH), or the URL
    of a fresh PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield None
        return
    database: RunDatabase = request.getfixturevalue("postgres_database")
    with database.schema() as url:
        yield url


@pytest.fixture
def database_target(tmp_path: Path, database_url: str | None) -> Path | Engine:
    """What `Database(...)` opens in this test: a SQLite file, or a PostgreSQL schema."""
    if database_url is None:
        return tmp_path / "data" / "dingbot.db"
    return PostgresEngine(database_url)


@pytest.fixture
def make_settings(
    tmp_path: Path, fake_dingtalk: FakeDingTalk, database_url: str | None
) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "force_mock_openai": True,
            "secret": SECRET,
            "database_path": tmp_path / "data" / "dingbot.db",
            "database_url": database_url,
            "dingtalk_oapi_base": fake_dingtalk.url,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


OPENAI_KEY = "sk-test-0123456789abcdefghijklmnop"  # what real_settings gives the local OpenAI server


@pytest.fixture
def real_settings(make_settings: Callable[..., Settings], fake_openai: FakeOpenAI) -> Callable[..., Settings]:
    """Settings with a real ChatOpenAI talking to the local OpenAI-compatible server (no retries)."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "force_mock_openai": False,
            "openai_api_key": OPENAI_KEY,
            "openai_api_base": f"{fake_openai.url}/v1",
            "openai_max_retries": 0,
            "openai_timeout": 5,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def app_settings(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> Callable[..., Settings]:
    """Settings with app credentials: the OpenAPI sends are on, served by the local DingTalk."""

    def build(**overrides: Any) -> Settings:
        return make_settings(**{**app_credentials(fake_dingtalk), **overrides})

    return build


def app_credentials(fake_dingtalk: FakeDingTalk) -> dict[str, Any]:
    """The app's AppKey/AppSecret, its OpenAPI (sends, cards, the file API) on the local DingTalk."""
    return {
        "dingtalk_client_id": "dingappkey",
        "dingtalk_client_secret": "app-secret-value",
        "dingtalk_api_base": fake_dingtalk.url,
    }


class RunningApp:
    def __init__(self, url: str, server: uvicorn.Server) -> None:
        self.url = url
        self.server = server
        self.client = httpx.Client(base_url=url, timeout=PATIENCE)

    def post_callback(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.client.post("/dingtalk/callback", content=body, headers=headers)


@contextmanager
def serve(settings: Settings) -> Iterator[RunningApp]:
    """The real app under real uvicorn, on a free loopback port, in a thread."""
    config = server_config(create_app(settings), "127.0.0.1", 0)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 2 * PATIENCE  # the first start in a process imports the embedder, mem0
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    app = RunningApp(f"http://127.0.0.1:{port}", server)
    try:
        yield app
    finally:
        app.client.close()
        server.should_exit = True
        thread.join(timeout=PATIENCE)
        assert not thread.is_alive(), "the app did not shut down"


@pytest.fixture
def run_app() -> Callable[[Settings], Any]:
    return serve


def run(coro: Any) -> Any:
    return asyncio.run(coro)
