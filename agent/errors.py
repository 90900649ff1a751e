"""The small error hierarchy of DingHook. Messages never contain secrets."""

from __future__ import annotations

import enum


class DingbotError(Exception):
    """Base of every error DingHook raises on purpose."""


class ConfigError(DingbotError):
    """A setting is missing or invalid; the message is one line naming the variable and the fix."""


class PromptError(DingbotError):
    """A prompt file is missing or invalid; the message names the file."""


class ModelErrorKind(enum.StrEnum):
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    MODEL_NOT_FOUND = "model_not_found"
    QUOTA = "quota"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    SERVER_ERROR = "server_error"
    BAD_REQUEST = "bad_request"
    UNKNOWN = "unknown"


class ModelError(DingbotError):
    """A model call failed. `kind` selects the person's message; `cause` and `fix` are for operators."""

    def __init__(
        self,
        kind: ModelErrorKind,
        cause: str,
        fix: str,
        *,
        cause_zh: str = "",
        fix_zh: str = "",
        context_exceeded: bool = False,
        said: str = "",
    ) -> None:
        super().__init__(f"{kind.value}: {cause}")
        self.kind = kind
        self.cause = cause
        self.fix = fix
        self.cause_zh = cause_zh
        self.fix_zh = fix_zh
        self.context_exceeded = context_exceeded  # the prompt was longer than the model's context
        self.said = said  # the endpoint's own words (its error message), e.g. the context length it has
