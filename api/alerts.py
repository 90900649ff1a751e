"""Operator alerts: with ACCESS_TOKEN set, the robot's group hears when the model endpoint fails, memory
is off or replies cannot be delivered, and when that is over. Through the outbox (durable, 20 a minute);
each problem at most once per ALERT_REPEAT_MINUTES, and no more than MAX_ALERTS_PER_WINDOW of all kinds.

Also the service's observer: what the agent reports goes to the metrics and, for problems, here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from agent.observe import Problem
from agent.prompts.library import PromptLibrary
from agent.settings.config import Settings
from api.delivery.courier import Courier
from api.delivery.outbox import OutboxState
from api.dingtalk.robot_webhook import notice_body
from api.metrics import Metrics

log = logging.getLogger(__name__)

MAX_ALERTS_PER_WINDOW = 10  # of all kinds within ALERT_REPEAT_MINUTES: the robot's budget is shared
FIRST_TRY_SECONDS = 5.0  # how long a problem's report waits for the alert's first send


class OperatorAlerts:
    def __init__(
        self,
        *,
        settings: Settings,
        courier: Courier,
        prompts: PromptLibrary,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = settings.operator_alerts and courier.can_notify
        self._courier = courier
        self._prompts = prompts
        self._bot_name = settings.bot_name
        self._repeat = settings.alert_repeat_minutes * 60
        self._clock = clock
        self._told: dict[str, tuple[float, str]] = {}  # key -> (when, title) of the last alert sent
        self._recent: deque[float] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self.undeliverable = ""  # why the last alert could not be sent ("" when it was, or none was due)

    async def problem(self, problem: Problem) -> bool:
        """Tell the operators, unless they were told of this within the window. True when they know:
        the alert went out (or was accepted into the robot's queue) now or within the window."""
        if not self.enabled:
            return False
        now = self._clock()
        told = self._told.get(problem.key)
        if told is not None and now - told[0] < self._repeat:
            return not self.undeliverable
        while self._recent and now - self._recent[0] >= self._repeat:
            self._recent.popleft()
        if len(self._recent) >= MAX_ALERTS_PER_WINDOW:
            log.warning(
                "operator alert about %s not sent: %d alerts already sent", problem.key, len(self._recent)
            )
            return False
        self._told[problem.key] = (now, problem.title_zh)
        self._recent.append(now)
        text = self._prompts.defaults.reply(
            "operator_alert",
            bot_name=self._bot_name,
            title=problem.title_zh,
            cause=problem.cause_zh,
            fix=problem.fix_zh,
        )
        try:  # the first attempt is awaited: whether it went out decides what the person is told
            await asyncio.wait_for(
                asyncio.shield(self._track(self._deliver(problem.key, text))), FIRST_TRY_SECONDS
            )
        except TimeoutError:
            log.warning("operator alert about %s: DingTalk is slow to answer; it stays queued", problem.key)
        return not self.undeliverable

    def resolved(self, key: str) -> None:
        """Say it is over, when an alert about it was sent."""
        told = self._told.pop(key, None)
        if told is None or not self.enabled:
            return
        text = self._prompts.defaults.reply("operator_resolved", bot_name=self._bot_name, title=told[1])
        self._track(self._deliver(key, text))  # the agent reports from the service's loop

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, key: str, text: str) -> None:
        try:
            row_id = await self._courier.notify(notice_body(text))
            status = await self._courier.status(row_id)
        except Exception as exc:
            self.undeliverable = type(exc).__name__
            log.error("operator alert about %s could not be stored (%s)", key, type(exc).__name__)
            return
        if status is not None and status[0] is OutboxState.FAILED:
            self.undeliverable = status[1]
            log.error(
                "operator alerts cannot be delivered: %s. Fix: check ACCESS_TOKEN and the robot's signing "
                "secret (DINGTALK_ROBOT_SECRET or SECRET); `dingbot doctor --send-test-message` tries one",
                status[1],
            )
            return
        self.undeliverable = ""
        log.info(
            "operator alert about %s %s",
            key,
            "sent" if status and status[0] is OutboxState.SENT else "queued",
        )

    async def close(self) -> None:
        """Let alerts being stored finish (they are durable once stored; the outbox sends them later)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)


class ServiceObserver:
    """What the agent reports: timings to the metrics, problems to the metrics and the operators."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.alerts: OperatorAlerts | None = None  # attached once the courier exists
        self._early: list[Problem] = []  # reported before that (memory that did not open)

    async def attach(self, alerts: OperatorAlerts) -> None:
        self.alerts = alerts
        for problem in self._early:
            await alerts.problem(problem)
        self._early.clear()

    def model_call(self, seconds: float, error_kind: str | None) -> None:
        self.metrics.model_call(seconds, error_kind)

    def memory_recall(self, seconds: float) -> None:
        self.metrics.memory_recall(seconds)

    async def problem(self, problem: Problem) -> bool:
        self.metrics.problem(problem.key)
        if self.alerts is None:
            self._early.append(problem)
            return False
        return await self.alerts.problem(problem)

    def resolved(self, key: str) -> None:
        if self.alerts is not None:
            self.alerts.resolved(key)
