"""The chat model factory: a real OpenAI-compatible model, Azure, or the offline mock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from langchain_core.language_models import BaseChatModel

from agent.model.mock import MockChatModel
from agent.model.mock_memory import MockExtractionModel, MockSummaryModel
from agent.settings.choices import Provider
from agent.settings.config import Settings

AZURE_STREAM_USAGE_SINCE = "2024-09-01"  # the first GA api-version that takes stream_options


def build_chat_model(
    settings: Settings,
    *,
    mock_reply_template: str | Callable[[], str],
    max_tokens: int | None = None,
    json_answers: bool = False,
) -> BaseChatModel:
    """Build the chat model the settings describe. Build it once: the first ChatOpenAI costs ~100 ms.

    `mock_reply_template` is the mock model's answer template (replies.yaml `mock_reply`), or a function
    returning the one in use now, so an edited template shows without a restart. Every answer is capped
    at `max_tokens` (MAX_TOKENS unless given)."""
    provider = settings.provider
    max_tokens = max_tokens or settings.max_tokens
    if provider is Provider.MOCK:
        if callable(mock_reply_template):
            return MockChatModel(reply_template=mock_reply_template(), template_source=mock_reply_template)
        return MockChatModel(reply_template=mock_reply_template)

    # Imported here: langchain_openai costs ~0.5 s to import, and mock mode never needs it.
    from langchain_openai import AzureChatOpenAI, ChatOpenAI

    assert settings.openai_api_key is not None  # agent/settings/loading.py check_runnable guarantees it
    if provider is Provider.AZURE:
        parts = urlsplit(settings.openai_api_base)
        return AzureChatOpenAI(
            azure_endpoint=f"{parts.scheme}://{parts.netloc}",
            azure_deployment=settings.openai_model,
            api_version=settings.openai_api_version,
            api_key=settings.openai_api_key,
            timeout=settings.openai_timeout,
            max_retries=0,  # retried by agent/model/answer.py, where a retry can help (not timeouts)
            max_tokens=max_tokens,  # sent as max_tokens: what the deployments API takes
            # a streamed answer's tokens, for /usage and the metric: api-versions before 2024-09 refuse it
            stream_usage=settings.openai_api_version >= AZURE_STREAM_USAGE_SINCE,
            **_json_mode(json_answers),
        )
    return ChatOpenAI(
        model=settings.openai_model,
        base_url=settings.openai_api_base,
        api_key=settings.openai_api_key,
        timeout=settings.openai_timeout,
        max_retries=0,  # retried by agent/model/answer.py, where a retry can help (not timeouts)
        max_tokens=max_tokens,  # sent as max_completion_tokens, which OpenAI's own API expects
        # Several OpenAI-compatible servers (llama.cpp, older vLLM and Ollama) ignore max_completion_tokens
        # and run to the end of their context: they get the older name too.
        extra_body=None if provider in (Provider.OPENAI, Provider.AZURE_V1) else {"max_tokens": max_tokens},
        # A streamed answer's tokens (stream_options.include_usage), for /usage and the metric; an unknown
        # server may refuse the field, so its streamed answers are counted with cl100k_base instead.
        stream_usage=provider is not Provider.COMPATIBLE,
        **_json_mode(json_answers),
    )


def _json_mode(on: bool) -> dict[str, Any]:
    """JSON answers and no sampling: the memory extraction's settings."""
    return {"temperature": 0.0, "model_kwargs": {"response_format": {"type": "json_object"}}} if on else {}


EXTRACTION_MAX_TOKENS = 256  # a few short facts in JSON; a model that runs on is cut here


def build_extraction_model(settings: Settings) -> BaseChatModel:
    """Fact extraction: the conversation's endpoint and model, capped at EXTRACTION_MAX_TOKENS, at
    temperature 0 and asked for JSON where the endpoint is known to take `response_format` (OpenAI, Azure,
    llama.cpp, vLLM and Ollama on this machine); mock mode has its own offline extractor."""
    if settings.provider is Provider.MOCK:
        return MockExtractionModel()
    json_answers = settings.provider is not Provider.COMPATIBLE  # unknown servers may refuse the field
    return build_chat_model(
        settings, mock_reply_template="", max_tokens=EXTRACTION_MAX_TOKENS, json_answers=json_answers
    )


def build_summary_model(settings: Settings) -> BaseChatModel:
    """The rolling conversation summary: the conversation's endpoint and model, capped at SUMMARY_TOKENS;
    mock mode has its own offline summariser."""
    if settings.provider is Provider.MOCK:
        return MockSummaryModel()
    return build_chat_model(settings, mock_reply_template="", max_tokens=max(settings.summary_tokens, 16))
