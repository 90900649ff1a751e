"""Long-term memory that cannot open says why, by its real cause, with the fix for that cause."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.settings.config import Settings
from tests.conftest import serve, subprocess_env
from tests.fakes.openai_server import FakeOpenAI

HOLD = """
import sys
from qdrant_client import QdrantClient
client = QdrantClient(path=sys.argv[1])  # embedded Qdrant takes the folder's lock, as a service does
print("holding", flush=True)
sys.stdin.read()
"""


def memory_off(app: Any) -> str:
    health = app.client.get("/healthz").json()
    assert health["memory"] == "off"
    return str(health["memory_off"])


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Callable[[Settings], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def hold(settings: Settings) -> subprocess.Popen[str]:
        folder = settings.memory_folder / "qdrant"
        folder.mkdir(parents=True)
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "holding"
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


def test_a_folder_held_by_another_process_names_that_process(
    make_settings: Callable[..., Settings],
    holder: Callable[[Settings], subprocess.Popen[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings()
    process = holder(settings)
    with caplog.at_level(logging.WARNING), serve(settings) as app:
        cause = memory_off(app)
    folder = settings.memory_folder.resolve()
    assert cause.startswith(f"the memory folder {folder} is held by another process: pid {process.pid} (")
    assert cause.endswith(
        f"pid {process.pid} ({Path(sys.executable).name})"
    )  # the program, not its arguments
    [line] = [r.getMessage() for r in caplog.records if "long-term memory is OFF" in r.getMessage()]
    assert "Fix: stop that process, or give this one its own DATABASE_PATH" in line


def real(make_settings: Callable[..., Settings], base: str) -> Settings:
    return make_settings(force_mock_openai=False, openai_api_key="sk-test", openai_api_base=base)


def test_an_embeddings_host_that_does_not_resolve_is_a_dns_failure(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_resolve = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("llm.internal.example", b"llm.internal.example"):  # the name server's answer
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with serve(real(make_settings, "http://llm.internal.example:8000/v1")) as app:
        cause = memory_off(app)
    assert cause == (
        "the embeddings endpoint cannot be reached: "
        "the host name 'llm.internal.example' does not resolve (DNS)"
    )


def test_a_refused_connection_says_nothing_listens(make_settings: Callable[..., Settings]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with serve(real(make_settings, f"http://127.0.0.1:{port}/v1")) as app:
        cause = memory_off(app)
    assert cause == (
        "the embeddings endpoint cannot be reached: "
        f"connection refused by 127.0.0.1:{port}: nothing listens there"
    )


def test_an_endpoint_without_embeddings_is_told_to_use_the_local_embedder(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.embeddings = False
    with caplog.at_level(logging.WARNING), serve(real(make_settings, f"{fake_openai.url}/v1")) as app:
        cause = memory_off(app)
    assert cause.startswith("the endpoint has no embeddings model 'text-embedding-3-small' (HTTP 404)")
    assert "Fix: set EMBEDDING_PROVIDER=local" in caplog.text


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (PermissionError(13, "Permission denied", "/srv/bot_store/qdrant/.lock"), "permission denied"),
        (OSError(28, "No space left on device"), "the disk is full"),
        (OSError(30, "Read-only file system"), "the file system is read-only"),
    ],
)
def test_a_folder_that_cannot_be_written_is_not_blamed_on_the_network(
    make_settings: Callable[..., Settings], error: OSError, cause: str
) -> None:
    """Root ignores permissions, so the disk's answers are raised as the store would raise them."""
    from agent.memory.failures import explain_open_failure

    for settings in (make_settings(), real(make_settings, "http://127.0.0.1:9/v1")):
        try:
            raise RuntimeError("Qdrant could not open its storage") from error
        except RuntimeError as wrapped:
            problem = explain_open_failure(wrapped, settings)
        assert problem.cause.startswith(
            f"the memory folder {settings.memory_folder.resolve()} cannot be written"
        )
        assert cause in problem.cause
        assert "OPENAI_API_BASE" not in problem.cause + problem.fix
        assert "DATABASE_PATH" in problem.fix
