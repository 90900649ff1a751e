"""`dingbot doctor`'s tools checks: each MCP server of MCP_CONFIG started with its tools listed, a server
that does not start named with its error, a broken file in one line, and whether reminders can be
delivered after a conversation's reply window."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.settings.config import PROJECT_ROOT
from tests.doctor.helpers import SECRETS, doctor, statuses


def test_each_mcp_server_is_started_and_its_tools_listed(
    env: Callable[..., None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mcp.json"
    servers = {
        "tests": {
            "command": sys.executable,
            "args": ["-m", "tests.fakes.mcp_server"],
            "env": {"PYTHONPATH": str(PROJECT_ROOT)},
            "allowed_tools": ["add", "secret_word"],
            "in_groups": True,
        },
        "time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
        "missing": {"command": str(tmp_path / "no-such-server")},
    }
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    env(FORCE_MOCK_OPENAI="1", MCP_CONFIG=str(config))
    code, _, checks = doctor(capsys, "--json")
    assert code == 1
    assert checks["tools.mcp.tests"]["detail"] == "2 tool(s): add, secret_word"
    assert checks["tools.mcp.time"]["detail"] == "2 tool(s): get_current_time, convert_time (one-to-one only)"
    missing = checks["tools.mcp.missing"]
    assert missing["status"] == "fail"
    assert missing["cause"].startswith("did not start: FileNotFoundError")
    assert statuses(checks)["tools.reminders"] == "warn"  # no app credentials


def test_a_broken_mcp_file_fails_in_one_line_and_app_credentials_make_reminders_ok(
    env: Callable[..., None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {"x": {"type": "carrier-pigeon"}}}', encoding="utf-8")
    env(
        FORCE_MOCK_OPENAI="1",
        MCP_CONFIG=str(config),
        DINGTALK_CLIENT_ID="dingappkey",
        DINGTALK_CLIENT_SECRET=SECRETS["DINGTALK_CLIENT_SECRET"],
    )
    code, _, checks = doctor(capsys, "--json")
    assert code == 1
    assert checks["tools.mcp"]["status"] == "fail"
    assert "unknown transport 'carrier-pigeon'" in checks["tools.mcp"]["cause"]
    assert statuses(checks)["tools.reminders"] == "ok"


def test_without_mcp_config_the_check_is_skipped(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    env(FORCE_MOCK_OPENAI="1")
    _, out, _ = doctor(capsys)
    assert "- MCP servers · MCP 服务器" in out
    assert "Tools · 工具" in out
