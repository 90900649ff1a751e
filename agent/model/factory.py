"""The chat model factory: a real OpenAI-compatible model, Azure, or the offline mock."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from langchain_core.language_models import BaseChatModel

from agent.model.mock import MockChatModel, MockExtractionModel
from agent.settings.choices import Provider
from agent.settings.config import Settings


def build_chat_model(
    settings: Settings, *, mock_reply_template: str | Callable[[], str], max_tokens: int | None = None
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
            max_retries=settings.openai_max_retries,
            max_tokens=max_tokens,  # sent as max_tokens: what the deployments API takes
        )
    return ChatOpenAI(
        model=settings.openai_model,
        base_url=settings.openai_api_base,
        api_key=settings.openai_api_key,
        timeout=settings.openai_timeout,
        max_retries=settings.openai_max_retries,
        max_tokens=max_tokens,  # sent as max_completion_tokens, which OpenAI's own API expects
        # Several OpenAI-compatible servers (llama.cpp, older vLLM and Ollama) ignore max_completion_tokens
        # and run to the end of their context: they get the older name too.
        extra_body=None if provider in (Provider.OPENAI, Provider.AZURE_V1) else {"max_tokens": max_tokens},
    )


def build_extraction_model(settings: Settings, chat_model: BaseChatModel) -> BaseChatModel:
    """Fact extraction runs on the same chat model as the conversation; mock mode has its own."""
    return MockExtractionModel() if settings.provider is Provider.MOCK else chat_model
