"""A real Chroma server for tests (`chroma run` from this virtualenv), on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.waiting import PATIENCE

CHROMA = Path(sys.executable).parent / "chroma"


@contextmanager
def chroma_server(folder: Path, port: int | None = None) -> Iterator[str]:
    """Start a Chroma server keeping its data in `folder` (on `port`, else a free one); its URL while the
    block runs."""
    port = port or free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ANONYMIZED_TELEMETRY": "False"}
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / "server.log").open("ab")  # Chroma's own words, for a failing test
    process = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + PATIENCE
    try:
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Chroma server did not start (exit code {process.poll()})")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
