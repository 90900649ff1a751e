"""Callbacks go first on SQLite: a waiting ack asks the other writers to hold back, by a shared mark."""

from __future__ import annotations

import mmap
import os
import struct
import time
from pathlib import Path

STALE_SECONDS = 0.05  # a mark older than this is a waiter that died or stopped waiting: ignored
GIVE_WAY_STEP_SECONDS = 0.00005  # how often a writer holding back looks again
GIVE_WAY_LONGEST_SECONDS = 0.02  # and for how long at most, per transaction
_MARK = struct.Struct("d")  # when the waiter last found the lock taken (time.monotonic(): one clock per boot)


class WriterTurns:
    """SQLite has one writer at a time and no queue: a callback's insert that finds the lock taken polls
    for it, and the answering process, writing after every answer, kept taking it back first (a
    transaction of 0.3 ms made acks wait 6-8 ms at p99 under load, measured). So the waiter marks that it
    waits (`waiting`, again at every try), and every other writer, before its next transaction, holds back
    while the mark is fresh (`give_way`). The mark is 8 bytes in a file beside the database, mapped by
    each process that opens it (the acking process, the service); a waiter that dies leaves a mark that goes
    stale in STALE_SECONDS."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _MARK.size:
                os.ftruncate(fd, _MARK.size)
            self._mark = mmap.mmap(fd, _MARK.size)
        finally:
            os.close(fd)

    def waiting(self) -> None:
        """A callback's write found the lock taken: the others hold back until `done`."""
        _MARK.pack_into(self._mark, 0, time.monotonic())

    def done(self) -> None:
        _MARK.pack_into(self._mark, 0, 0.0)

    def give_way(self) -> None:
        """Before a transaction of a writer that is not waiting: wait while a callback's write waits (at
        most GIVE_WAY_LONGEST_SECONDS)."""
        until = 0.0
        while True:
            marked = _MARK.unpack_from(self._mark, 0)[0]
            now = time.monotonic()
            if not marked or not 0 <= now - marked < STALE_SECONDS:
                return
            until = until or now + GIVE_WAY_LONGEST_SECONDS
            if now >= until:
                return
            time.sleep(GIVE_WAY_STEP_SECONDS)

    def close(self) -> None:
        self._mark.close()
