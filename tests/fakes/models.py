"""LangChain fake chat models that record every prompt they receive (like simonw/llm's mock)."""

from __future__ import annotations

from agent.model.scripted import RecordingChatModel, render

__all__ = ["RecordingChatModel", "render"]
