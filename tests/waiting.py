"""Waiting in tests without wall-clock assumptions.

A test waits for what it expects (a condition, an event, a request) and fails only when it has not
happened after PATIENCE seconds: long enough for a busy machine, and never what a test measures. Bounds
on how long something took come from the intervals the test itself sets, not from how fast this machine is.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

PATIENCE = 30.0  # seconds before a wait gives up; a wait that gives up fails the test


def wait_until(
    condition: Callable[[], T], timeout: float = PATIENCE, what: str = "the condition", every: float = 0.02
) -> T:
    """Poll `condition` until it returns something truthy (returned); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
    return result


def until_served(
    process: subprocess.Popen[Any], url: str, timeout: float = 2 * PATIENCE, what: str = "server"
) -> None:
    """Wait until `url` answers 200 (a cold start imports the embedder, mem0 and LangChain: twice PATIENCE);
    AssertionError if `process` exits first or it never does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"{what} exited early"
        assert time.monotonic() < deadline, f"{what} did not become healthy"
        time.sleep(0.1)
