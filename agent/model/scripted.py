"""A chat model with scripted replies that records every prompt it receives (like simonw/llm's mock).

Prompt regression cases (agent/prompts/cases.py) and the tests use it: nothing leaves the process.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import Field


class RecordingChatModel(FakeListChatModel):
    """FakeListChatModel with scripted replies that keeps the exact messages of every call."""

    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.prompts.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def render(messages: list[BaseMessage]) -> str:
    """A readable text of what a model received."""
    return "\n".join(f"--- {m.type} ---\n{m.content}" for m in messages) + "\n"
