"""The transcripts in README.md and docs/*.md: every ```console block is run and its output compared.

A block holds `$ command` lines, each followed by the output it printed. The commands run with bash in a
fresh folder (not under /tmp), next to a service started exactly as README command 1 starts it (mock mode,
no .env) on a free port, with the project's virtualenv first on PATH. Shown as in the docs: the folder and
the repository as /home/you/dinghook, the service's port as 8080. Timings, clock times and ports are
compared loosely; everything else exactly.

    python -m tests.doc_transcripts --update     # rerun every transcript and write its output back
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
SAMPLE_HOME = "/home/you/dinghook"  # where the docs pretend to run: no machine paths in them
SAMPLE_PORT = "8080"
COMMAND_TIMEOUT_SECONDS = 120
_LOOSE = (
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:ms|s)\b"), "<time>"),  # durations
    (re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?: 星期.)?"), "<date and time>"),  # reminders
    (re.compile(r"\b\d{2}:\d{2}:\d{2}\b"), "<clock>"),
    (re.compile(r"\b1\d{9}(?:\.\d+)?\b"), "<epoch>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
)


@dataclass
class Step:
    command: str
    output: list[str] = field(default_factory=list)


@dataclass
class Block:
    path: Path
    first_line: int  # 0-based index of the line after ```console
    last_line: int  # index of the closing ```
    steps: list[Step]

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.first_line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    start: int | None = None
    for number, line in enumerate(lines):
        if start is None and line.strip() == "```console":
            start = number + 1
        elif start is not None and line.strip() == "```":
            steps: list[Step] = []
            for body in lines[start:number]:
                if body.startswith("$ "):
                    steps.append(Step(body[2:]))
                elif steps:
                    steps[-1].output.append(body)
            found.append(Block(path, start, number, steps))
            start = None
    return found


def loose(lines: list[str]) -> list[str]:
    text = "\n".join(line.rstrip() for line in lines).strip("\n")
    for pattern, token in _LOOSE:
        text = pattern.sub(token, text)
    return text.split("\n") if text else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sandbox:
    """A folder, an environment and a running mock-mode service to run the transcripts against."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.bin = Path(sys.executable).parent
        self.env = {
            "PATH": f"{self.bin}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": str(folder),
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'subprocess_guard'}",  # the network guard
            "NO_PROXY": "127.0.0.1,localhost",
            "HF_HUB_OFFLINE": "1",
            "PORT": str(port),
        }

    def shown(self, text: str) -> str:
        """Output as the docs show it."""
        text = text.replace(str(self.folder), SAMPLE_HOME).replace(str(ROOT), SAMPLE_HOME)
        return text.replace(f"127.0.0.1:{self.port}", f"127.0.0.1:{SAMPLE_PORT}")

    def run(self, command: str) -> list[str]:
        actual = command.replace(".venv/bin/", f"{self.bin}/").replace(
            f"127.0.0.1:{SAMPLE_PORT}", f"127.0.0.1:{self.port}"
        )
        done = subprocess.run(
            ["bash", "-c", actual],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
        text = self.shown(done.stdout.decode("utf-8", errors="replace")).rstrip("\n")
        return text.split("\n") if text else []


@contextlib.contextmanager
def sandbox() -> Iterator[Sandbox]:
    """README command 1's service (mock mode, no .env, its own folder) on a free port."""
    folder = Path.home() / ".cache" / "dinghook-doc-transcripts" / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    box = Sandbox(folder, free_port())
    log = (folder.parent / f"{folder.name}.log").open("wb")
    service = subprocess.Popen(  # the quick start: mock mode, defaults, in the folder the commands run in
        [sys.executable, "-m", "dingbot.server"],
        cwd=folder,
        env={**box.env, "FORCE_MOCK_OPENAI": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(box.port, service, folder.parent / f"{folder.name}.log")
        yield box
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
        (folder.parent / f"{folder.name}.log").unlink(missing_ok=True)


def _wait_ready(port: int, service: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError(f"the service exited: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the service was not ready within 120 s: {log.read_text(errors='replace')[-2000:]}")


def update() -> int:
    with sandbox() as box:
        for path in DOCS:
            lines = path.read_text(encoding="utf-8").splitlines()
            for block in reversed(blocks(path)):
                new: list[str] = []
                for step in block.steps:
                    new += [f"$ {step.command}", *box.run(step.command)]
                lines[block.first_line : block.last_line] = new
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="rerun every transcript and write it back")
    if not parser.parse_args().update:
        parser.error("nothing to do: pass --update (pytest compares them: tests/test_docs.py)")
    sys.exit(update())
