"""Documents turned into text in a child process (agent/media/convert.py) with a time and memory limit:
a PDF crafted to loop or to balloon is killed at the limit and the service carries on."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import dataclass

from agent.media.problems import MediaProblem, MediaReason
from agent.media.sniff import FileType

log = logging.getLogger(__name__)

_REASONS = {reason.value: reason for reason in MediaReason}


def _child_environment() -> dict[str, str]:
    """What the converter may see of the environment: how to find Python and our code, never a key or
    secret (it parses files strangers made)."""
    keep = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {name: value for name in keep if (value := os.environ.get(name))}


@dataclass(frozen=True)
class Document:
    """A file's text, as the model reads it."""

    name: str  # as sent
    label: str  # "PDF", "Word", "Excel", "PowerPoint", "Markdown", "CSV", "HTML", "文本"
    text: str  # at most FILE_MAX_CHARS
    pages: int  # pages, sheets or slides (0 when the format has none)
    unit: str  # "页", "个工作表" or ""
    complete: bool  # False: cut at FILE_MAX_CHARS

    @property
    def chars(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class ConvertLimits:
    max_chars: int
    seconds: float
    memory_mb: int


async def convert_document(data: bytes, kind: FileType, name: str, limits: ConvertLimits) -> Document:
    """The document's text, or MediaProblem: encrypted, empty, damaged, or over a limit."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.media.convert",
        kind.kind,
        str(limits.max_chars),
        str(limits.memory_mb),
        env=_child_environment(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,  # a parser's complaints may quote the file: not for the log
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(data), limits.seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        log.warning("file conversion (%s) stopped at FILE_CONVERT_SECONDS=%g", kind.label, limits.seconds)
        raise MediaProblem(
            MediaReason.TOO_HARD, f"{kind.label} took over {limits.seconds:g} s", name=name
        ) from None
    except BaseException:
        if process.returncode is None:  # cancelled (shutdown, the answer's deadline): no orphan left
            process.kill()
            await process.wait()
        raise
    elapsed = (time.perf_counter() - started) * 1000
    try:
        result = json.loads(out) if process.returncode == 0 else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        log.warning(
            "file conversion (%s) failed: exit %s after %.0f ms (FILE_CONVERT_MEMORY_MB=%d)",
            kind.label,
            process.returncode,
            elapsed,
            limits.memory_mb,
        )
        raise MediaProblem(MediaReason.TOO_HARD, f"the converter exited with {process.returncode}", name=name)
    if "problem" in result:
        reason = _REASONS.get(str(result["problem"]), MediaReason.BROKEN)
        raise MediaProblem(reason, str(result.get("detail", "")), name=name, type_label=kind.label)
    log.info("file converted (%s): %d chars in %.0f ms", kind.label, len(result["text"]), elapsed)
    return Document(
        name=name,
        label=kind.label,
        text=str(result["text"]),
        pages=int(result.get("pages") or 0),
        unit=str(result.get("unit") or ""),
        complete=bool(result.get("complete", True)),
    )
