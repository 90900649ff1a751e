"""Settings: every environment variable DingHook reads, with defaults and validation.

The names are a public contract (../shared/settings.md). Nothing else in the code reads the environment.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROMPTS_DIR = PROJECT_ROOT / "prompts"


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


class Provider(enum.StrEnum):
    """Which kind of model endpoint the settings point at."""

    MOCK = "mock"
    OPENAI = "openai"
    AZURE = "azure"  # https://<res>.openai.azure.com/ → deployments path, AzureChatOpenAI
    AZURE_V1 = "azure-v1"  # https://<res>.openai.azure.com/openai/v1/ → plain ChatOpenAI
    LOCAL = "local"  # Ollama, vLLM, anything on this machine
    COMPATIBLE = "compatible"  # any other OpenAI-compatible endpoint


# One hint per variable: what a valid value looks like. Shown when a value is rejected.
_FIX_HINTS: dict[str, str] = {
    "OPENAI_API_BASE": "use a full http(s) URL, e.g. OPENAI_API_BASE=https://api.openai.com/v1",
    "OPENAI_TIMEOUT": "use a number of seconds greater than 0, e.g. OPENAI_TIMEOUT=60",
    "OPENAI_MAX_RETRIES": "use a whole number from 0 to 10, e.g. OPENAI_MAX_RETRIES=2",
    "FORCE_MOCK_OPENAI": "use 1/true/yes to turn mock mode on, 0/false/no (or unset) for off",
    "GROUP_SHARED_CONTEXT": "use 1/true/yes or 0/false/no",
    "PORT": "use a whole number from 1 to 65535, e.g. PORT=8080",
    "CHECK_INTERVAL_SECONDS": "use a number of seconds greater than 0, e.g. CHECK_INTERVAL_SECONDS=60",
    "HISTORY_TURNS": "use a whole number from 0 to 100, e.g. HISTORY_TURNS=10",
    "WORKERS": "use a whole number from 1 to 64, e.g. WORKERS=4",
    "RETENTION_DAYS": "use a number of days greater than 0, e.g. RETENTION_DAYS=30",
    "BOT_TIMEZONE": "use an IANA time zone name, e.g. BOT_TIMEZONE=Asia/Shanghai",
    "LOG_LEVEL": "use one of DEBUG, INFO, WARNING, ERROR",
    "DINGTALK_OAPI_BASE": "use a full http(s) URL, e.g. DINGTALK_OAPI_BASE=https://oapi.dingtalk.com",
    "DINGTALK_API_BASE": "use a full http(s) URL, e.g. DINGTALK_API_BASE=https://api.dingtalk.com",
    "DINGTALK_SIGN_WINDOW_SECONDS": "use a number of seconds from 1 to 3600, e.g. 3600",
    "EMBEDDING_PROVIDER": "use openai (the chat endpoint's embeddings) or local (offline, bundled)",
    "EMBEDDING_DIMS": "leave it unset (probed), or give the embedder's vector size, e.g. EMBEDDING_DIMS=1536",
    "QDRANT_URL": "use a full http(s) URL of a Qdrant server, e.g. QDRANT_URL=http://localhost:6333",
    "MEMORY_TOP_K": "use a whole number from 0 to 50, e.g. MEMORY_TOP_K=5",
    "MEMORY_MAX_CHARS": "use a whole number from 0 to 20000, e.g. MEMORY_MAX_CHARS=1500",
    "MEMORY_TIMEOUT": "use a number of seconds greater than 0, e.g. MEMORY_TIMEOUT=10",
    "STALE_MESSAGE_SECONDS": "use a number of seconds greater than 0, e.g. STALE_MESSAGE_SECONDS=600",
    "MAX_MESSAGE_CHARS": "use a whole number from 1 to 100000, e.g. MAX_MESSAGE_CHARS=4000",
    "RATE_LIMIT_PER_MINUTE": "use a whole number from 0 (no limit) to 10000, e.g. RATE_LIMIT_PER_MINUTE=20",
    "PROMPTS_DIR": "point it at a folder that holds chat.yaml (the project's prompts/ folder)",
    "DINGTALK_MODE": "use http (callbacks), stream (a WebSocket to DingTalk, no public URL) or both",
    "DINGTALK_STREAM_HEARTBEAT_SECONDS": "use a number of seconds from 1 to 300, e.g. 20",
    "DINGTALK_STREAM_IDLE_SECONDS": "use a number of seconds from 5 to 3600, e.g. 180",
    "DINGTALK_REPLY_STYLE": "use card (an AI card the answer streams into) or plain (text/Markdown messages)",
}


def _check_http_url(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    return value


class Settings(BaseSettings):
    """All configuration, from the environment or a `.env` file in the working directory."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
    )

    # --- model (names from the seed guide) ---
    openai_api_key: SecretStr | None = None
    openai_api_base: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4-turbo"
    force_mock_openai: bool = False
    openai_timeout: float = Field(default=60.0, gt=0)
    openai_max_retries: int = Field(default=2, ge=0, le=10)
    openai_api_version: str = "2024-10-21"

    # --- long-term memory ---
    embedding_provider: EmbeddingProvider | None = None  # default: openai, or local in mock mode
    embedding_model: str = "text-embedding-3-small"
    embedding_dims: int | None = Field(default=None, ge=8, le=8192)
    qdrant_url: str | None = None
    memory_top_k: int = Field(default=5, ge=0, le=50)
    memory_max_chars: int = Field(default=1500, ge=0, le=20000)
    memory_timeout: float = Field(default=10.0, gt=0)

    # --- DingTalk ---
    access_token: SecretStr | None = None
    secret: SecretStr | None = None
    dingtalk_client_id: str | None = None
    dingtalk_client_secret: SecretStr | None = None
    dingtalk_robot_secret: SecretStr | None = None
    dingtalk_outgoing_token: SecretStr | None = None
    dingtalk_sign_window_seconds: float = Field(default=3600.0, gt=0, le=3600)
    dingtalk_oapi_base: str = "https://oapi.dingtalk.com"
    dingtalk_api_base: str = "https://api.dingtalk.com"
    dingtalk_mode: DingTalkMode = DingTalkMode.HTTP
    dingtalk_stream_heartbeat_seconds: float = Field(default=20.0, ge=1, le=300)  # WebSocket ping interval
    dingtalk_stream_idle_seconds: float = Field(default=180.0, ge=5, le=3600)  # no frame this long: reconnect
    dingtalk_card_template_id: str | None = None
    dingtalk_reply_style: ReplyStyle = ReplyStyle.CARD

    # --- service ---
    host: str = "0.0.0.0"  # noqa: S104 - the service is meant to be reachable by DingTalk
    port: int = Field(default=8080, ge=1, le=65535)
    database_path: Path = Path("dingbot_memory.db")
    check_interval_seconds: float = Field(default=60.0, gt=0)
    workers: int = Field(default=4, ge=1, le=64)
    retention_days: float = Field(default=30.0, gt=0)
    log_level: str = "INFO"

    # --- limits and access ---
    max_message_chars: int = Field(default=4000, ge=1, le=100_000)
    rate_limit_per_minute: int = Field(default=20, ge=0, le=10_000)  # 0: no limit
    stale_message_seconds: float = Field(default=600.0, gt=0)  # older callbacks (createAt) are not answered
    allowed_users: str = ""  # comma-separated staff ids (or sender ids); empty: everyone
    allowed_groups: str = ""  # comma-separated conversation ids; empty: every group
    dingtalk_robot_code: str | None = None
    dingtalk_corp_id: str | None = None

    # --- conversation ---
    history_turns: int = Field(default=10, ge=0, le=100)
    group_shared_context: bool = False
    bot_name: str = "小钉"
    bot_timezone: str = "Asia/Shanghai"
    prompts_dir: Path = DEFAULT_PROMPTS_DIR

    @field_validator("openai_api_base", "dingtalk_oapi_base", "dingtalk_api_base")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        return _check_http_url(value)

    @field_validator("qdrant_url")
    @classmethod
    def _valid_optional_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @field_validator("bot_timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone") from exc
        return value

    @field_validator("log_level")
    @classmethod
    def _valid_log_level(cls, value: str) -> str:
        upper = value.strip().upper()
        if upper not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("unknown log level")
        return upper

    @field_validator("openai_model", "bot_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    # --- derived facts ---

    @property
    def mock_mode(self) -> bool:
        return self.force_mock_openai

    @property
    def provider(self) -> Provider:
        if self.mock_mode:
            return Provider.MOCK
        parts = urlsplit(self.openai_api_base)
        host = (parts.hostname or "").lower()
        if host.endswith(".openai.azure.com"):
            return Provider.AZURE_V1 if "/openai/v1" in parts.path.rstrip("/") + "/" else Provider.AZURE
        if host == "api.openai.com":
            return Provider.OPENAI
        if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.startswith("127."):  # noqa: S104
            return Provider.LOCAL
        return Provider.COMPATIBLE

    @property
    def callback_secret(self) -> SecretStr | None:
        """The secret that verifies inbound callbacks: SECRET, else DINGTALK_CLIENT_SECRET."""
        return self.secret or self.dingtalk_client_secret

    @property
    def allowed_user_ids(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.allowed_users.split(",") if part.strip())

    @property
    def allowed_group_ids(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.allowed_groups.split(",") if part.strip())

    @property
    def uses_stream(self) -> bool:
        return self.dingtalk_mode in (DingTalkMode.STREAM, DingTalkMode.BOTH)

    @property
    def app_credentials(self) -> bool:
        return bool(self.dingtalk_client_id and self.dingtalk_client_secret)

    @property
    def card_replies(self) -> bool:
        """Answers stream into an AI card: a template, app credentials, and the card style chosen."""
        return (
            self.dingtalk_reply_style is ReplyStyle.CARD
            and bool(self.dingtalk_card_template_id)
            and self.app_credentials
        )

    @property
    def embeddings(self) -> EmbeddingProvider:
        if self.mock_mode:  # mock mode never touches the network
            return EmbeddingProvider.LOCAL
        return self.embedding_provider or EmbeddingProvider.OPENAI

    @property
    def memory_folder(self) -> Path:
        """Embedded Qdrant and mem0's history DB: a folder beside DATABASE_PATH, never /tmp or ~."""
        path = self.database_path
        return path.parent / f"{path.stem}_store"

    @property
    def longest_answer_seconds(self) -> float:
        """How long one answer can take at most: every model attempt timing out, plus room for the send."""
        return self.openai_timeout * (self.openai_max_retries + 1) + 60

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.bot_timezone)

    def check_runnable(self) -> None:
        """Cross-field rules that must hold before the service starts."""
        if not self.mock_mode and (
            self.openai_api_key is None or not self.openai_api_key.get_secret_value().strip()
        ):
            raise ConfigError(
                "OPENAI_API_KEY is not set: set OPENAI_API_KEY (any value for Ollama/vLLM), "
                "or set FORCE_MOCK_OPENAI=1 to run on the built-in mock model"
            )
        if not (self.prompts_dir / "chat.yaml").is_file():
            raise ConfigError(f"PROMPTS_DIR has no chat.yaml: {_FIX_HINTS['PROMPTS_DIR']}")
        if self.uses_stream and not self.app_credentials:
            raise ConfigError(
                f"DINGTALK_MODE={self.dingtalk_mode.value} needs the app's credentials: set "
                "DINGTALK_CLIENT_ID (AppKey) and DINGTALK_CLIENT_SECRET (AppSecret), or DINGTALK_MODE=http"
            )


def _describe(error: dict[str, Any]) -> str:
    name = str(error["loc"][0]).upper() if error.get("loc") else "SETTINGS"
    raw = error.get("input")  # secrets are SecretStr and accept any text: they never fail here
    shown = "" if isinstance(raw, dict) else f"={raw!r}"
    reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    hint = _FIX_HINTS.get(name, "check its value against the settings table in README.md")
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
        settings.check_runnable()
    return settings
