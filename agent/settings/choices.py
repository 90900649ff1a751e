"""The fixed choices some settings take, and the kinds of model endpoint the settings can point at."""

from __future__ import annotations

import enum


class EmbeddingProvider(enum.StrEnum):
    OPENAI = "openai"  # the chat model's endpoint and key
    LOCAL = "local"  # the bundled offline multilingual embedder


class DingTalkMode(enum.StrEnum):
    """How DingTalk's messages arrive."""

    HTTP = "http"  # robot callbacks posted to /dingtalk/callback (needs a public URL)
    STREAM = "stream"  # a WebSocket the service opens to DingTalk's gateway (no public URL)
    BOTH = "both"


class ReplyStyle(enum.StrEnum):
    CARD = "card"  # an AI card the answer streams into (needs DINGTALK_CARD_TEMPLATE_ID and app credentials)
    PLAIN = "plain"  # text / Markdown messages


class ImageSupport(enum.StrEnum):
    """Whether the model is sent pictures."""

    AUTO = "auto"  # try; when the endpoint refuses image input, say so and stop trying until restart
    TRUE = "true"
    FALSE = "false"  # never: people are told the model cannot see pictures


class Provider(enum.StrEnum):
    """Which kind of model endpoint the settings point at."""

    MOCK = "mock"
    OPENAI = "openai"
    AZURE = "azure"  # https://<res>.openai.azure.com/ → deployments path, AzureChatOpenAI
    AZURE_V1 = "azure-v1"  # https://<res>.openai.azure.com/openai/v1/ → plain ChatOpenAI
    LOCAL = "local"  # Ollama, vLLM, anything on this machine
    COMPATIBLE = "compatible"  # any other OpenAI-compatible endpoint


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"  # the only level that logs what people wrote
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
