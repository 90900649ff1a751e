"""The model endpoint's state, so a wrong endpoint is not first noticed by a person in chat: checked at
startup (and again while failing) with `dingbot doctor`'s own checks, and updated by every answer.

One line in the log on every change of state, with the cause and the fix; operators are told through
the observer (alerts). Answers are the ground truth: a check that passes does not clear a failure that
answers still show.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from agent.errors import ModelError, ModelErrorKind

if TYPE_CHECKING:
    from agent.diagnostics.checks import Check
from agent.observe import NoObserver, Observer, Problem
from agent.settings.config import Settings

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 5.0  # per request of a check (GET /models)
# These say the endpoint cannot answer anyone until someone changes something: failing at once.
DOWN_KINDS = frozenset(
    {
        ModelErrorKind.AUTHENTICATION,
        ModelErrorKind.PERMISSION,
        ModelErrorKind.MODEL_NOT_FOUND,
        ModelErrorKind.QUOTA,
        ModelErrorKind.CONNECTION,
    }
)
# These may pass by themselves: failing only when they keep happening.
PASSING_KINDS = frozenset({ModelErrorKind.TIMEOUT, ModelErrorKind.SERVER_ERROR})
PASSING_FAILURES_BEFORE_DOWN = 3


class ModelState(enum.StrEnum):
    MOCK = "mock"  # the built-in mock model: nothing to check
    UNCHECKED = "unchecked"
    CHECKING = "checking"
    OK = "ok"
    FAILING = "failing"


@dataclass(frozen=True)
class ModelStatus:
    state: ModelState
    source: str = ""  # what set it: "startup check", "periodic check", "answer"
    cause: str = ""
    fix: str = ""
    cause_zh: str = ""
    fix_zh: str = ""
    kind: str = ""  # the ModelErrorKind of a failed answer
    check: str = ""  # the doctor check that failed (e.g. model.listed), for a failed check
    detail: str = ""  # what a passing check found
    since: float = 0.0  # epoch seconds of the last change

    def public(self, *, details: bool) -> dict[str, Any]:
        """For /healthz and /readyz. No secrets in any of these (causes name the endpoint without
        credentials), but the cause, the fix and what checks found describe the set-up: `details` only
        for whoever asks from this machine."""
        hidden = () if details else ("cause", "fix", "cause_zh", "fix_zh", "detail")
        return {k: v for k, v in asdict(self).items() if v not in ("", 0.0) and k not in hidden}


class ModelHealth:
    def __init__(self, settings: Settings, observer: Observer | None = None) -> None:
        self.settings = settings
        self.observer: Observer = observer or NoObserver()
        state = ModelState.MOCK if settings.mock_mode else ModelState.UNCHECKED
        self._status = ModelStatus(state, since=time.time())
        self._passing_failures = 0
        self._answers = 0  # answers seen, failed or not: a check older than the last answer is stale
        self.checked_at = float("-inf")  # time.monotonic() when the last check finished

    @property
    def status(self) -> ModelStatus:
        return self._status

    def _change(self, status: ModelStatus) -> None:
        before = self._status
        same = before.state is status.state and before.cause == status.cause
        self._status = replace(status, since=before.since if same else time.time())  # since when it is so
        if status.state is ModelState.FAILING:
            if before.state is not ModelState.FAILING or before.cause != status.cause:
                log.warning(
                    "model endpoint FAILING (%s): %s. Fix: %s", status.source, status.cause, status.fix
                )
        elif status.state is ModelState.OK and before.state is not ModelState.OK:
            recovered = " again" if before.state is ModelState.FAILING else ""
            log.info(
                "model endpoint ok%s (%s)%s",
                recovered,
                status.source,
                f": {status.detail}" if status.detail else "",
            )
            if before.state is ModelState.FAILING:
                self.observer.resolved("model")

    def _as_problem(self) -> Problem:
        status = self._status
        return Problem(
            "model",
            "model endpoint failing",
            "模型服务不可用",
            status.cause,
            status.cause_zh or status.cause,
            status.fix,
            status.fix_zh or status.fix,
        )

    # --- what answers say ----------------------------------------------------------------------

    def answered(self) -> None:
        self._answers += 1
        self._passing_failures = 0
        if self._status.state not in (ModelState.OK, ModelState.MOCK):
            self._change(ModelStatus(ModelState.OK, "answer", detail="a model call succeeded"))

    async def answer_failed(self, error: ModelError) -> bool:
        """Record a failed answer. True when operators are told of the failure (see Observer.problem)."""
        self._answers += 1
        if error.kind in PASSING_KINDS:
            self._passing_failures += 1
            if self._passing_failures < PASSING_FAILURES_BEFORE_DOWN:
                return False
        elif error.kind not in DOWN_KINDS:
            return False  # about this request (too long, refused content), not the endpoint
        failing = ModelStatus(
            ModelState.FAILING,
            "answer",
            error.cause,
            error.fix,
            error.cause_zh,
            error.fix_zh,
            error.kind.value,
        )
        self._change(failing)
        return await self.observer.problem(self._as_problem())

    # --- checks --------------------------------------------------------------------------------

    async def check(self, source: str) -> ModelStatus:
        """Run the doctor's endpoint checks (key plausible, base reachable, key accepted, model listed) in a
        thread. Never raises. Answers outrank checks: while a failed answer stands, or when an answer came
        while the check ran, the check's result changes nothing."""
        if self._status.state is ModelState.MOCK:
            return self._status
        if self._status.state is ModelState.UNCHECKED:
            self._status = replace(self._status, state=ModelState.CHECKING, source=source)
        answers_before = self._answers
        try:
            failed, found = await asyncio.to_thread(self._run_checks)
            self.checked_at = time.monotonic()
        except Exception as exc:  # a bug in a check must never stop the service
            log.warning(
                "model endpoint check could not run (%s); it is tried again later", type(exc).__name__
            )
            if self._status.state is ModelState.CHECKING:
                self._status = replace(self._status, state=ModelState.UNCHECKED)
            return self._status
        if self._answers != answers_before or (
            self._status.state is ModelState.FAILING and self._status.source == "answer"
        ):
            return self._status  # answers know better
        if failed is not None:
            self._change(
                ModelStatus(
                    ModelState.FAILING,
                    source,
                    failed.cause,
                    failed.fix,
                    failed.cause_zh,
                    failed.fix_zh,
                    check=failed.name,
                )
            )
            self.observer.report(self._as_problem())
        else:
            self._change(ModelStatus(ModelState.OK, source, detail=found))
        return self._status

    def _run_checks(self) -> tuple[Check | None, str]:
        """(the first failed check or None, what the passing checks found)."""
        from agent.diagnostics.checks import Status
        from agent.diagnostics.model import check_key, model_checks

        key = check_key(self.settings)
        if key.status is Status.FAIL:  # a missing or placeholder key: nothing to ask the endpoint
            return key, ""
        timeout = min(CHECK_TIMEOUT_SECONDS, self.settings.openai_timeout)
        checks, _ = model_checks(self.settings, timeout=timeout, complete=False)
        failed = next((c for c in checks if c.status is Status.FAIL), None)
        found = "; ".join(f"{c.title}: {c.detail}" for c in checks if c.detail and c.name != "model.key")
        return failed, found
