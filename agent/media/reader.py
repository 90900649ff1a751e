"""Read what a message carries: fetch each picture and file from the channel (a MediaSource), decide its
type from its bytes, and turn it into what the model reads. Bytes live only for the turn."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.media.documents import ConvertLimits, Document, convert_document
from agent.media.pictures import Picture, prepare_picture
from agent.media.problems import MediaProblem, MediaReason
from agent.media.sniff import sniff
from agent.messages import IncomingMessage, Media
from agent.observe import NoObserver, Observer
from agent.settings.config import Settings

log = logging.getLogger(__name__)

MAX_PICTURES = 6  # per message (rich text can hold many): more would only crowd the model's context
PICTURE_THREADS = 2  # pictures decoded at once: each may take ~150 MB (a 36 MP PNG) and a core


class MediaSource(Protocol):
    """Where attachments come from (the channel). Raises MediaProblem; never logs a code or URL."""

    async def fetch(self, message: IncomingMessage, media: Media, max_bytes: int) -> bytes: ...


class LocalFiles:
    """Attachments named by a local path in `Media.code`: `dingbot chat`'s /image and /file."""

    async def fetch(self, message: IncomingMessage, media: Media, max_bytes: int) -> bytes:
        return await asyncio.to_thread(self._read, Path(media.code), media.name, max_bytes)

    @staticmethod
    def _read(path: Path, name: str, max_bytes: int) -> bytes:
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise MediaProblem(MediaReason.TOO_LARGE, f"{size} bytes is over {max_bytes}", name=name)
            return path.read_bytes()
        except OSError as exc:
            raise MediaProblem(MediaReason.EXPIRED, f"cannot read {path.name}: {exc.strerror}") from None


Outcome = Picture | Document | MediaProblem


@dataclass
class Received:
    """What one message carried, read: each attachment in order with what came of it (None: not read,
    a picture the model would not see, or one past MAX_PICTURES)."""

    items: list[tuple[Media, Outcome | None]] = field(default_factory=list)

    @property
    def pictures(self) -> list[Picture]:
        return [outcome for _, outcome in self.items if isinstance(outcome, Picture)]

    @property
    def documents(self) -> list[Document]:
        return [outcome for _, outcome in self.items if isinstance(outcome, Document)]

    @property
    def problems(self) -> list[MediaProblem]:
        return [outcome for _, outcome in self.items if isinstance(outcome, MediaProblem)]


class MediaReader:
    def __init__(
        self, settings: Settings, source: MediaSource | None, observer: Observer | None = None
    ) -> None:
        self.settings = settings
        self.source = source  # None: the channel cannot fetch (no app credentials)
        self.observer: Observer = observer or NoObserver()
        # Its own threads, so a burst of photos is bounded in memory and CPU. Not at a lower priority: a
        # niced thread that holds the GIL delays the event loop (measured worse, bench/media.py).
        self._pictures = ThreadPoolExecutor(PICTURE_THREADS, thread_name_prefix="pictures")
        self.limits = ConvertLimits(
            max_chars=settings.file_max_chars,
            seconds=settings.file_convert_seconds,
            memory_mb=settings.file_convert_memory_mb,
        )

    async def read(self, message: IncomingMessage, *, pictures: bool = True) -> Received:
        """Fetch and read every attachment (pictures only when `pictures`, at most MAX_PICTURES)."""
        received = Received()
        seen = 0
        for media in message.media:
            if media.kind == "picture" and (not pictures or seen >= MAX_PICTURES):
                received.items.append((media, None))
                continue
            started = time.perf_counter()
            kind = [media.kind]  # the type from the bytes, once they are in
            try:
                outcome: Outcome | None = await self._read_one(message, media, kind, pictures)
            except MediaProblem as problem:
                log.info("attachment not read (%s): %s", kind[0], problem.detail)
                problem.name = problem.name or media.name
                outcome = problem
            spent = time.perf_counter() - started
            result = outcome.reason.value if isinstance(outcome, MediaProblem) else "ok"
            self.observer.media_read(kind[0], result if outcome is not None else "not_shown", spent)
            received.items.append((media, outcome))
            seen += isinstance(outcome, Picture)
        return received

    async def _read_one(
        self, message: IncomingMessage, media: Media, kind_seen: list[str], pictures: bool
    ) -> Picture | Document | None:
        """What the attachment is, read; None for a picture (sent as a file) the model is not shown."""
        if self.source is None:
            raise MediaProblem(
                MediaReason.NO_CREDENTIALS, "DINGTALK_CLIENT_ID / DINGTALK_CLIENT_SECRET not set"
            )
        data = await self.source.fetch(message, media, self.settings.media_max_bytes)
        kind = sniff(data, media.name)
        kind_seen[0] = kind.kind
        if kind.is_picture:
            if not pictures:
                return None
            work = functools.partial(
                prepare_picture,
                data,
                max_edge=self.settings.image_max_edge,
                max_pixels=self.settings.image_max_pixels,
            )
            return await asyncio.get_running_loop().run_in_executor(self._pictures, work)
        if not kind.readable or media.kind == "picture":
            raise MediaProblem(
                MediaReason.UNSUPPORTED, f"a {kind.kind} file", name=media.name, type_label=kind.label
            )
        return await convert_document(data, kind, media.name or kind.label, self.limits)
