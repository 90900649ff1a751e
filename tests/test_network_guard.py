"""The guard that keeps tests on loopback is itself tested (it must be able to fail)."""

from __future__ import annotations

import socket
import sys

import pytest

from tests.conftest import LIVE
from tests.network_guard import NetworkAccessBlocked, check_event, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", b"localhost"])
def test_loopback_hosts_pass(host: object) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "192.168.1.1", "8.8.8.8", "api.openai.com", "oapi.dingtalk.com", None]
)
def test_other_hosts_are_blocked(host: object) -> None:
    assert not is_loopback(host)
    if host is not None:
        with socket.socket() as sock, pytest.raises(NetworkAccessBlocked):
            check_event("socket.connect", (sock, (host, 443)))


@pytest.mark.skipif(LIVE, reason="DINGBOT_LIVE_TESTS=1 lifts the guard on purpose")
def test_the_installed_hook_fires_before_any_packet() -> None:
    # sys.audit raises the same event socket.connect raises, without touching the network.
    with socket.socket() as sock, pytest.raises(NetworkAccessBlocked, match=r"203\.0\.113\.7"):
        sys.audit("socket.connect", sock, ("203.0.113.7", 443))
    with pytest.raises(NetworkAccessBlocked, match=r"api\.openai\.com"):
        sys.audit("socket.getaddrinfo", "api.openai.com", 443, 0, 0, 0)
    with socket.socket() as sock:
        sys.audit("socket.connect", sock, ("127.0.0.1", 9))  # loopback passes


@pytest.mark.skipif(LIVE, reason="DINGBOT_LIVE_TESTS=1 lifts the guard on purpose")
def test_child_processes_started_by_tests_are_guarded_too() -> None:
    import subprocess

    from tests.conftest import subprocess_env

    probe = "import sys; sys.audit('socket.getaddrinfo', 'api.openai.com', 443, 0, 0, 0)"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "NetworkAccessBlocked" in result.stderr
