"""Operator alerts: with ACCESS_TOKEN set, the robot's group hears when the model endpoint fails, memory
is off or replies cannot be delivered, and when the model is back. Through the outbox (durable, 20 a
minute); each problem at most once per ALERT_REPEAT_MINUTES — a problem that comes back within the window
after it was resolved is not alerted again, so a flapping one costs two messages an hour, not a flood —
and no more than MAX_ALERTS_PER_WINDOW of all kinds.

Also the service's observer: what the agent reports goes to the metrics and, for problems, here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
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
FIRST_TRY_SECONDS = 5.0  # how long a report that must know the outcome waits for the alert's first send
CLOSE_SECONDS = 5.0  # at shutdown, how long alerts being stored may take before they are abandoned


@dataclass
class _Alert:
    """The last alert about one problem."""

    at: float
    title: str
    sending: asyncio.Task[bool]  # True once it went out, or was accepted into the robot's queue
    resolved: bool = False


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
        self._alerts: dict[str, _Alert] = {}
        self._recent: deque[float] = deque()  # when each alert of the window was sent
        self._tasks: set[asyncio.Task[Any]] = set()

    async def problem(self, problem: Problem) -> bool:
        """Tell the operators, unless they were told of this within the window. True when they know of
        it: this problem's alert went out (or was queued) and it has not been resolved since."""
        if not self.enabled:
            return False
        now = self._clock()
        last = self._alerts.get(problem.key)
        if last is not None and now - last.at < self._repeat:
            return not last.resolved and await self._outcome(last.sending)
        while self._recent and now - self._recent[0] >= self._repeat:
            self._recent.popleft()
        if len(self._recent) >= MAX_ALERTS_PER_WINDOW:
            log.warning(
                "operator alert about %s not sent: %d already sent lately", problem.key, len(self._recent)
            )
            return False
        self._recent.append(now)
        text = self._prompts.defaults.reply(
            "operator_alert",
            bot_name=self._bot_name,
            title=problem.title_zh,
            cause=problem.cause_zh,
            fix=problem.fix_zh,
        )
        alert = _Alert(now, problem.title_zh, self._track(self._deliver(problem.key, text)))
        self._alerts[problem.key] = alert
        return await self._outcome(alert.sending)

    def report(self, problem: Problem) -> None:
        """Tell the operators without waiting for the send (nobody is told whether it went out)."""
        if self.enabled:
            self._track(self.problem(problem))

    def resolved(self, key: str) -> None:
        """Say it is over, once per alert that went out. The alert's time stays: see the module docstring."""
        alert = self._alerts.get(key)
        if alert is None or alert.resolved or not self.enabled:
            return
        alert.resolved = True
        text = self._prompts.defaults.reply("operator_resolved", bot_name=self._bot_name, title=alert.title)

        async def after_the_alert() -> None:
            if await alert.sending:
                await self._deliver(key, text)

        self._track(after_the_alert())

    async def _outcome(self, sending: asyncio.Task[bool]) -> bool:
        try:
            return await asyncio.wait_for(asyncio.shield(sending), FIRST_TRY_SECONDS)
        except TimeoutError:  # DingTalk is slow to answer: the alert is stored and stays queued
            log.warning("operator alert: DingTalk is slow to answer; the alert stays queued")
            return True

    def _track(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)  # the agent reports on the service's loop
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, key: str, text: str) -> bool:
        try:
            row_id = await self._courier.notify(notice_body(text))
            status = await self._courier.status(row_id)
        except Exception as exc:
            log.error("operator alert about %s could not be stored (%s)", key, type(exc).__name__)
            return False
        if status is not None and status[0] is OutboxState.FAILED:
            log.error(
                "operator alerts cannot be delivered: %s. Fix: check ACCESS_TOKEN and the robot's signing "
                "secret (DINGTALK_ROBOT_SECRET or SECRET); `dingbot doctor --send-test-message` tries one",
                status[1],
            )
            return False
        sent = status is not None and status[0] is OutboxState.SENT
        log.info("operator alert about %s %s", key, "sent" if sent else "queued")
        return True

    async def close(self) -> None:
        """Let alerts being stored finish (once stored they are durable: the outbox sends them later);
        abandon what is still running after CLOSE_SECONDS, before the database closes."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=CLOSE_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class ServiceObserver:
    """What the agent reports: timings to the metrics, problems to the metrics and the operators."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.alerts: OperatorAlerts | None = None  # attached once the courier exists
        self._early: list[Problem] = []  # reported before that (memory that did not open)

    def attach(self, alerts: OperatorAlerts) -> None:
        self.alerts = alerts
        for problem in self._early:
            alerts.report(problem)
        self._early.clear()

    def model_call(self, seconds: float, error_kind: str | None) -> None:
        self.metrics.model_call(seconds, error_kind)

    def memory_recall(self, seconds: float) -> None:
        self.metrics.memory_recall(seconds)

    def answer_truncated(self) -> None:
        self.metrics.truncated.inc()

    def extraction_failed(self, reason: str) -> None:
        self.metrics.extraction_failures.labels(reason).inc()

    def tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        self.metrics.tool_calls.labels(tool, outcome).inc()
        self.metrics.tool_seconds.labels(tool).observe(seconds)

    def media_read(self, kind: str, outcome: str, seconds: float) -> None:
        self.metrics.media.labels(kind, outcome).inc()
        self.metrics.media_seconds.labels(kind).observe(seconds)

    def tokens_used(self, model: str, prompt: int, completion: int) -> None:
        self.metrics.tokens.labels(model, "prompt").inc(prompt)
        self.metrics.tokens.labels(model, "completion").inc(completion)

    def reminder_fired(self, delay_seconds: float, outcome: str) -> None:
        self.metrics.reminders.labels(outcome).inc()
        if outcome == "sent":
            self.metrics.reminder_delay.observe(delay_seconds)

    async def problem(self, problem: Problem) -> bool:
        self.metrics.problem(problem.key)
        if self.alerts is None:
            self._early.append(problem)
            return False
        return await self.alerts.problem(problem)

    def report(self, problem: Problem) -> None:
        self.metrics.problem(problem.key)
        if self.alerts is None:
            self._early.append(problem)
        else:
            self.alerts.report(problem)

    def resolved(self, key: str) -> None:
        if self.alerts is not None:
            self.alerts.resolved(key)
