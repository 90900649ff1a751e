"""What every doctor check answers: a status, what was found, and the cause and the fix in English and
Chinese; plus the masking every check uses for secrets."""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass
from typing import Any

from agent.settings.config import Settings


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but worth a look: does not change the exit code
    FAIL = "fail"
    SKIP = "skip"  # could not run (mock mode, nothing configured, an earlier check failed): cause says why


@dataclass
class Check:
    name: str  # stable id, e.g. "model.endpoint"
    title: str
    title_zh: str
    status: Status
    detail: str = ""  # what was found (names, numbers, timings); never a secret
    cause: str = ""
    cause_zh: str = ""
    fix: str = ""
    fix_zh: str = ""
    elapsed_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    def failed(self, cause: str, cause_zh: str, fix: str = "", fix_zh: str = "") -> Check:
        return self._set(Status.FAIL, cause, cause_zh, fix, fix_zh)

    def warned(self, cause: str, cause_zh: str, fix: str = "", fix_zh: str = "") -> Check:
        return self._set(Status.WARN, cause, cause_zh, fix, fix_zh)

    def _set(self, status: Status, cause: str, cause_zh: str, fix: str, fix_zh: str) -> Check:
        self.status, self.cause, self.cause_zh, self.fix, self.fix_zh = status, cause, cause_zh, fix, fix_zh
        return self

    def skipped(self, reason: str, reason_zh: str) -> Check:
        self.status, self.cause, self.cause_zh = Status.SKIP, reason, reason_zh
        return self


def new_check(name: str, title: str, title_zh: str, detail: str = "") -> Check:
    return Check(name, title, title_zh, Status.OK, detail)


def mask(value: str) -> str:
    """A secret as `sk-…7f2a`: never more than its last 4 characters (none of a short one)."""
    value = value.strip()
    if len(value) < 12:
        return f"<{len(value)} chars>"
    return ("sk-" if value.startswith("sk-") else "") + "…" + value[-4:]


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, for a last redaction pass over the doctor's output."""
    fields = (
        settings.openai_api_key,
        settings.secret,
        settings.access_token,
        settings.dingtalk_client_secret,
        settings.dingtalk_robot_secret,
        settings.dingtalk_outgoing_token,
        settings.console_password,
    )
    found = [f.get_secret_value() for f in fields if f is not None and f.get_secret_value().strip()]
    if settings.database_url is not None:  # its password, as a driver's error may quote it
        from urllib.parse import unquote, urlsplit

        password = urlsplit(settings.database_url.get_secret_value()).password
        if password:
            found += [password, unquote(password)]
    return found


def ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
