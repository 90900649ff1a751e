"""Loading the settings: one line per rejected value naming the variable and the fix, and the rules
across fields that must hold before the service starts."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import SecretStr, ValidationError

from agent.errors import ConfigError
from agent.settings.config import Settings
from agent.settings.reference import fix_hint


def check_runnable(settings: Settings) -> None:
    """Cross-field rules that must hold before the service starts."""
    if not settings.mock_mode and (
        settings.openai_api_key is None or not settings.openai_api_key.get_secret_value().strip()
    ):
        raise ConfigError(
            "OPENAI_API_KEY is not set: set OPENAI_API_KEY (any value for Ollama/vLLM), "
            "or set FORCE_MOCK_OPENAI=1 to run on the built-in mock model"
        )
    if not (settings.prompts_dir / "chat.yaml").is_file():
        raise ConfigError(f"PROMPTS_DIR has no chat.yaml: {fix_hint('prompts_dir')}")
    if settings.chroma_url and settings.qdrant_url:
        raise ConfigError(
            "CHROMA_URL and QDRANT_URL are both set: long-term memory lives on one, unset the other"
        )
    if settings.uses_stream and not settings.app_credentials:
        raise ConfigError(
            f"DINGTALK_MODE={settings.dingtalk_mode.value} needs the app's credentials: set "
            "DINGTALK_CLIENT_ID (AppKey) and DINGTALK_CLIENT_SECRET (AppSecret), or DINGTALK_MODE=http"
        )


def _describe(error: dict[str, Any]) -> str:
    name = str(error["loc"][0]).upper() if error.get("loc") else "SETTINGS"
    raw = error.get("input")
    field = Settings.model_fields.get(name.lower())
    secret = field is not None and "SecretStr" in str(field.annotation)  # DATABASE_URL holds a password
    shown = "" if isinstance(raw, dict) or secret else f"={raw!r}"
    reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    hint = fix_hint(name.lower())
    return f"{name}{shown} is invalid ({reason}): {hint}"


def load_settings(*, runnable: bool = True, **overrides: Any) -> Settings:
    """Build Settings from the environment; a bad value becomes one ConfigError line per variable.

    `runnable=False` skips the checks that only the service needs (a model key, the prompts folder).
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(dict(e)) for e in exc.errors())) from None
    if runnable:
        check_runnable(settings)
    return settings


def fingerprint(settings: Settings) -> str:
    """A digest of every effective value, secrets included: two processes that must agree (the service and
    its acking process) compare it without either printing a secret."""
    values = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value for name, value in settings
    }
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=_plain).encode()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(map(str, value))  # a set's order differs from one process to the next
    return str(value)
