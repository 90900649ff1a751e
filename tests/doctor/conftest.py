"""Fixtures of the doctor tests: lasting storage, local OpenAI-compatible servers, the environment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.diagnostics import memory as diagnostics_memory
from tests.doctor.helpers import EMBEDDING, KEY, SECRETS
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.servers import FakeDingTalk


@pytest.fixture(autouse=True)
def lasting_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest's tmp_path is under /tmp, which the doctor rightly refuses; one test puts the rule back."""
    monkeypatch.setattr(diagnostics_memory, "TEMPORARY_ROOTS", ())


@pytest.fixture
def start_openai() -> Iterator[Callable[..., FakeOpenAI]]:
    started: list[FakeOpenAI] = []

    def start(models: tuple[str, ...] = ("gpt-4-turbo", EMBEDDING), **options: Any) -> FakeOpenAI:
        server = FakeOpenAI(models, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_dingtalk: FakeDingTalk) -> Callable[..., None]:
    def apply(**values: str) -> None:
        """The defaults (first call), then `values`; a later call changes only what it names."""
        defaults = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_TIMEOUT": "5",
            "DATABASE_PATH": str(tmp_path / "data" / "bot.db"),
            "SECRET": SECRETS["SECRET"],
            "DINGTALK_OAPI_BASE": fake_dingtalk.url,
            "DINGTALK_API_BASE": fake_dingtalk.url,
        }
        for name, value in ({} if applied else defaults).items():
            monkeypatch.setenv(name, value)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        applied.append(True)

    applied: list[bool] = []
    return apply
