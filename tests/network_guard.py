"""Fail any test that tries to reach beyond loopback (unless DINGBOT_LIVE_TESTS=1).

An audit hook sees every socket.connect and getaddrinfo before it happens, so nothing leaves.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class NetworkAccessBlocked(RuntimeError):
    pass


def is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_event(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        sock, address = args[0], args[1]
        family = getattr(sock, "family", None)
        if family is not None and family not in (socket.AF_INET, socket.AF_INET6):
            return  # unix sockets and the like stay on this machine
        if isinstance(address, tuple) and address and not is_loopback(address[0]):
            raise NetworkAccessBlocked(f"test tried to connect to {address[0]!r}: tests stay on loopback")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if host is not None and not is_loopback(host):
            raise NetworkAccessBlocked(f"test tried to resolve {host!r}: tests stay on loopback")


_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    sys.addaudithook(lambda event, args: check_event(event, args))
    _installed = True
