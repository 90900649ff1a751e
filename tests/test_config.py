"""Settings: defaults, the seed's names, one-line errors, secrets, provider detection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.settings.choices import Provider
from agent.settings.config import Settings
from agent.settings.loading import load_settings
from tests.conftest import subprocess_env


def test_defaults_match_the_public_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_MOCK_OPENAI", "1")
    s = load_settings()
    assert s.openai_api_base == "https://api.openai.com/v1"
    assert s.openai_model == "gpt-4-turbo"
    assert s.port == 8080
    assert s.host == "0.0.0.0"
    assert s.database_path == Path("dingbot_memory.db")
    assert s.check_interval_seconds == 60
    assert s.openai_timeout == 60
    assert s.openai_max_retries == 2
    assert s.openai_api_version == "2024-10-21"
    assert s.history_turns == 10
    assert s.group_shared_context is False
    assert s.bot_name == "小钉"
    assert s.bot_timezone == "Asia/Shanghai"
    assert s.dingtalk_oapi_base == "https://oapi.dingtalk.com"
    assert s.dingtalk_api_base == "https://api.dingtalk.com"
    assert s.dingtalk_sign_window_seconds == 3600
    assert s.workers == 4
    assert s.log_level == "INFO"


def test_seed_names_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "OPENAI_API_KEY": "sk-abc",
        "OPENAI_API_BASE": "http://localhost:11434/v1",
        "OPENAI_MODEL": "llama2",
        "PORT": "9090",
        "DATABASE_PATH": "data/bot.db",
        "CHECK_INTERVAL_SECONDS": "5",
        "SECRET": "SEC123",
        "ACCESS_TOKEN": "tok",
    }.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.openai_api_key is not None
    assert s.openai_api_key.get_secret_value() == "sk-abc"
    assert (s.openai_model, s.port, s.database_path, s.check_interval_seconds) == (
        "llama2",
        9090,
        Path("data/bot.db"),
        5,
    )
    assert s.provider is Provider.LOCAL
    assert s.callback_secret is not None
    assert s.callback_secret.get_secret_value() == "SEC123"


def test_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FORCE_MOCK_OPENAI=yes\nBOT_NAME=阿钉\n", encoding="utf-8")
    s = load_settings()
    assert s.mock_mode
    assert s.bot_name == "阿钉"


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", "on"])
def test_mock_mode_switch_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FORCE_MOCK_OPENAI", value)
    assert load_settings().provider is Provider.MOCK


def test_missing_key_names_both_ways_out() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "OPENAI_API_KEY" in message
    assert "FORCE_MOCK_OPENAI" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value", "fix"),
    [
        ("PORT", "eighty", "PORT=8080"),
        ("PORT", "70000", "use a whole number from 1 to 65535, e.g. PORT=8080"),
        ("OPENAI_API_BASE", "localhost:11434", "https://api.openai.com/v1"),
        ("OPENAI_TIMEOUT", "-1", "OPENAI_TIMEOUT=60"),
        ("BOT_TIMEZONE", "Mars/Base", "Asia/Shanghai"),
        ("FORCE_MOCK_OPENAI", "maybe", "1/true/yes"),
        ("HISTORY_TURNS", "many", "HISTORY_TURNS=10"),
        ("LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        ("DINGTALK_SIGN_WINDOW_SECONDS", "7200", "greater than 0, at most 3600"),
        ("DINGTALK_MODE", "websocket", "use one of http, stream, both"),
        ("DINGTALK_REPLY_STYLE", "typewriter", "use one of card, plain"),
        ("DINGTALK_STREAM_IDLE_SECONDS", "1", "from 5 to 3600, e.g. DINGTALK_STREAM_IDLE_SECONDS=180"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fix: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(name)
    assert fix in message
    assert "\n" not in message


def test_a_rejected_database_url_is_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    """It holds a password: the line names the variable and the fix, never the value."""
    monkeypatch.setenv("DATABASE_URL", "mysql://bot:hunter2@db.internal/dingbot")
    with pytest.raises(ConfigError) as info:
        load_settings(runnable=False)
    assert str(info.value).startswith(
        "DATABASE_URL is invalid (not a postgresql:// URL): use a postgresql://"
    )
    assert "hunter2" not in str(info.value)


def test_secrets_are_secretstr_and_never_shown_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_MOCK_OPENAI", "1")
    s = load_settings(secret="SECsupersecret", openai_api_key="sk-verysecret")
    shown = repr(s) + str(s)
    assert "SECsupersecret" not in shown
    assert "sk-verysecret" not in shown


@pytest.mark.parametrize(
    ("base", "provider"),
    [
        ("https://api.openai.com/v1", Provider.OPENAI),
        ("https://my-res.openai.azure.com/", Provider.AZURE),
        ("https://my-res.openai.azure.com/openai/v1/", Provider.AZURE_V1),
        ("https://my-res.openai.azure.com/openai/v1", Provider.AZURE_V1),
        ("http://localhost:11434/v1", Provider.LOCAL),
        ("http://127.0.0.1:8000/v1", Provider.LOCAL),
        ("https://api-inference.huggingface.co/v1", Provider.COMPATIBLE),
    ],
)
def test_provider_detection(base: str, provider: Provider) -> None:
    assert Settings(_env_file=None, openai_api_key="k", openai_api_base=base).provider is provider  # type: ignore[call-arg]


def _start(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dingbot.server"],
        env=subprocess_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "OPENAI_API_KEY is not set"),
        ({"FORCE_MOCK_OPENAI": "1", "PORT": "http"}, "PORT='http' is invalid"),
        (
            {"OPENAI_API_KEY": "sk-x", "OPENAI_API_BASE": "api.openai.com"},
            "OPENAI_API_BASE='api.openai.com' is invalid",
        ),
    ],
)
def test_server_refuses_to_start_with_one_clear_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = _start(env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_stream_mode_needs_the_app_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_MOCK_OPENAI", "1")
    monkeypatch.setenv("DINGTALK_MODE", "stream")
    with pytest.raises(ConfigError, match="DINGTALK_MODE=stream needs the app's credentials"):
        load_settings()
    monkeypatch.setenv("DINGTALK_CLIENT_ID", "dingappkey")
    monkeypatch.setenv("DINGTALK_CLIENT_SECRET", "app-secret")
    assert load_settings().uses_stream


def test_cards_need_a_template_credentials_and_the_card_style(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_MOCK_OPENAI", "1")
    assert load_settings().card_replies is False  # default: no template
    monkeypatch.setenv("DINGTALK_CARD_TEMPLATE_ID", "tpl.schema")
    assert load_settings().card_replies is False  # no app credentials
    monkeypatch.setenv("DINGTALK_CLIENT_ID", "dingappkey")
    monkeypatch.setenv("DINGTALK_CLIENT_SECRET", "app-secret")
    assert load_settings().card_replies is True
    monkeypatch.setenv("DINGTALK_REPLY_STYLE", "plain")
    assert load_settings().card_replies is False
