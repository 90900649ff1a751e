"""Observation hooks: the agent reports what it did; the service decides how to count it (Prometheus).

Also the id of the message being handled, for log lines (a context variable: tasks started while
handling a message inherit it).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

current_message_id: ContextVar[str] = ContextVar("current_message_id", default="-")


class Observer(Protocol):
    def model_call(self, seconds: float, error_kind: str | None) -> None: ...

    def memory_recall(self, seconds: float) -> None: ...


class NoObserver:
    def model_call(self, seconds: float, error_kind: str | None) -> None:
        return

    def memory_recall(self, seconds: float) -> None:
        return
