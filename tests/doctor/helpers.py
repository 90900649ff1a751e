"""Running `dingbot doctor` in a test: the values the fakes accept, and the doctor's answer as data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.diagnostics import memory as diagnostics_memory
from dingbot.cli import main

KEY = "sk-test-Zq8vN3xR5tW1yB7dK2mP9s7f2a"
AZURE_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
SECRETS = {
    "SECRET": "SECsigning-secret-0123456789abcdef",
    "ACCESS_TOKEN": "robot-access-token-5678abcd",
    "DINGTALK_CLIENT_SECRET": "app-secret-ABCDEFGH12345678",
}
EMBEDDING = "text-embedding-3-small"
DEFAULT_TEMPORARY_ROOTS = diagnostics_memory.TEMPORARY_ROOTS


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, dict[str, dict[str, Any]]]:
    """Run `dingbot doctor`; (exit code, stdout, checks by name when --json). No secret may be printed."""
    code = main(["doctor", *args])
    out, err = capsys.readouterr()
    for secret in (KEY, AZURE_KEY, *SECRETS.values()):
        assert secret not in out
        assert secret not in err
    checks = {c["name"]: c for c in json.loads(out)["checks"]} if "--json" in args else {}
    return code, out, checks


def statuses(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}
