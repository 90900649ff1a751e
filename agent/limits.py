"""Per-person rate limiting: RATE_LIMIT_PER_MINUTE messages in any 60 s window."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._seen: defaultdict[str, deque[float]] = defaultdict(deque)

    def allow(self, person_id: str) -> bool:
        """Count one message; False when the person already sent `per_minute` in the last 60 s."""
        if self.per_minute <= 0:
            return True
        now = self._clock()
        seen = self._seen[person_id]
        while seen and now - seen[0] >= 60:
            seen.popleft()
        if len(seen) >= self.per_minute:
            return False
        seen.append(now)
        return True

    def forget_idle(self) -> None:
        """Drop people with no message in the last minute (called by the periodic check)."""
        now = self._clock()
        for person_id in [p for p, seen in self._seen.items() if not seen or now - seen[-1] >= 60]:
            del self._seen[person_id]
