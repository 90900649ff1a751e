"""Readable snapshot files under tests/snapshots/. UPDATE_SNAPSHOTS=1 rewrites them."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


def assert_snapshot(name: str, actual: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        raise AssertionError(f"no snapshot {path.name}: run with UPDATE_SNAPSHOTS=1 and review the new file")
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), actual.splitlines(True), f"{path.name} (expected)", "actual"
            )
        )
        raise AssertionError(f"snapshot {path.name} differs (UPDATE_SNAPSHOTS=1 to accept):\n{diff}")
