"""Observation hooks: the agent reports what it did and what went wrong; the service decides how to count
it (Prometheus) and whom to tell (operator alerts).

Also the id of the message being handled, for log lines (a context variable: tasks started while
handling a message inherit it).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

current_message_id: ContextVar[str] = ContextVar("current_message_id", default="-")


@dataclass(frozen=True)
class Problem:
    """Something operators must fix: the model endpoint down, memory off, replies not delivered."""

    key: str  # stable, for deduplication: "model", "memory", "delivery"
    title: str  # English, for the log
    title_zh: str  # Chinese, for the alert in DingTalk
    cause: str
    cause_zh: str
    fix: str
    fix_zh: str


class Observer(Protocol):
    def model_call(self, seconds: float, error_kind: str | None) -> None: ...

    def memory_recall(self, seconds: float) -> None: ...

    def answer_truncated(self) -> None: ...

    def extraction_failed(self, reason: str) -> None: ...

    def tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        """A tool the model called: its name and outcome (ok, error, timeout, unknown), never its input."""
        ...

    def media_read(self, kind: str, outcome: str, seconds: float) -> None:
        """A picture or file read for the model (kind: the type from its bytes, e.g. png, pdf; outcome: ok
        or why not, e.g. too_large, encrypted, too_hard), and how long fetching and reading took."""
        ...

    def reminder_fired(self, delay_seconds: float, outcome: str) -> None:
        """A reminder fired `delay_seconds` after it was due; outcome: sent (stored to send) or dropped."""
        ...

    def tokens_used(self, model: str, prompt: int, completion: int) -> None:
        """One model call's tokens (the endpoint's own count, else cl100k_base's), by model."""
        ...

    async def problem(self, problem: Problem) -> bool:
        """Report a problem. True when operators were told of it (now, or already within the alert
        window, and the alert went out): only then may a person hear "the administrator was told"."""
        ...

    def report(self, problem: Problem) -> None:
        """Report a problem without waiting to learn whether operators were told (nobody is told so)."""
        ...

    def resolved(self, key: str) -> None: ...


class NoObserver:
    def model_call(self, seconds: float, error_kind: str | None) -> None:
        return

    def memory_recall(self, seconds: float) -> None:
        return

    def answer_truncated(self) -> None:
        return

    def extraction_failed(self, reason: str) -> None:
        return

    def tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        return

    def media_read(self, kind: str, outcome: str, seconds: float) -> None:
        return

    def reminder_fired(self, delay_seconds: float, outcome: str) -> None:
        return

    def tokens_used(self, model: str, prompt: int, completion: int) -> None:
        return

    async def problem(self, problem: Problem) -> bool:
        return False

    def report(self, problem: Problem) -> None:
        return

    def resolved(self, key: str) -> None:
        return
