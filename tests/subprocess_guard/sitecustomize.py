"""Loaded by Python at start-up in subprocesses the tests launch: the same loopback-only guard."""

import os

if os.environ.get("DINGBOT_LIVE_TESTS") != "1":
    from tests import network_guard

    network_guard.install()
