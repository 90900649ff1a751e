"""When a reminder is due: the model's forms of a time (an ISO 8601 duration, or a local date and
time), the checks (not past, within a year), the repeat words, and recurrence on local wall time
(dateutil's rrule)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta

from dateutil.rrule import DAILY, FR, MO, MONTHLY, TH, TU, WE, WEEKLY, rrule
from pydantic import TypeAdapter, ValidationError

MAX_AHEAD = timedelta(days=366)  # "within a year"
PAST_SLACK = timedelta(seconds=30)  # a time the model resolved to this minute is not "in the past"
_DURATION = TypeAdapter(timedelta)


class Repeat(enum.StrEnum):
    DAILY = "daily"
    WEEKDAYS = "weekdays"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


_REPEAT_WORDS = {
    "daily": Repeat.DAILY, "every day": Repeat.DAILY, "每天": Repeat.DAILY,
    "weekdays": Repeat.WEEKDAYS, "workdays": Repeat.WEEKDAYS, "每个工作日": Repeat.WEEKDAYS,
    "工作日": Repeat.WEEKDAYS,
    "weekly": Repeat.WEEKLY, "every week": Repeat.WEEKLY, "每周": Repeat.WEEKLY,
    "monthly": Repeat.MONTHLY, "every month": Repeat.MONTHLY, "每月": Repeat.MONTHLY,
}  # fmt: skip
_NO_REPEAT = {"", "none", "no", "once", "null", "不重复", "一次"}


class ReminderProblem(Exception):
    """A reminder that cannot be set: `key` names the sentence in replies.yaml (`reminders.<key>`)."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


def parse_repeat(value: str | None) -> Repeat | None:
    word = (value or "").strip().lower()
    if word in _NO_REPEAT:
        return None
    if word in _REPEAT_WORDS:
        return _REPEAT_WORDS[word]
    raise ReminderProblem("bad_repeat", repeat=value)


def resolve_when(when: str, now: datetime) -> datetime:
    """The due time of `when`: an ISO 8601 duration from now ("PT20M", "P1DT2H") or a date and time
    ("2026-12-04T09:00", local to `now`'s zone unless it carries an offset). Raises ReminderProblem."""
    text = when.strip()
    tz = now.tzinfo
    if text[:1] in ("P", "p", "+"):
        try:
            delta = _DURATION.validate_python(text.lstrip("+").upper())
        except ValidationError:
            raise ReminderProblem("bad_time", when=when) from None
        return (now.astimezone(UTC) + delta).astimezone(tz)  # elapsed time, whatever DST does
    try:
        due = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReminderProblem("bad_time", when=when) from None
    return due.replace(tzinfo=tz) if due.tzinfo is None else due.astimezone(tz)


def check_due(due: datetime, now: datetime) -> None:
    if due < now - PAST_SLACK:
        raise ReminderProblem("past", when=f"{due:%Y-%m-%d %H:%M}")
    if due > now + MAX_AHEAD:
        raise ReminderProblem("too_far")


def _rule(repeat: Repeat, anchor: datetime) -> rrule:
    start = anchor.replace(tzinfo=None)  # local wall time: 09:00 stays 09:00 across DST changes
    if repeat is Repeat.DAILY:
        return rrule(DAILY, dtstart=start)
    if repeat is Repeat.WEEKDAYS:
        return rrule(DAILY, dtstart=start, byweekday=(MO, TU, WE, TH, FR))
    if repeat is Repeat.WEEKLY:
        return rrule(WEEKLY, dtstart=start)
    # Monthly on the 31st: the last day of shorter months (rrule alone would skip them).
    return rrule(MONTHLY, dtstart=start, bymonthday=(start.day, -1), bysetpos=1)


def next_occurrence(repeat: Repeat, anchor: datetime, after: datetime) -> datetime:
    """The first occurrence strictly after `after`, in the anchor's zone."""
    tz = anchor.tzinfo
    found: datetime | None = _rule(repeat, anchor).after(after.astimezone(tz).replace(tzinfo=None))
    assert found is not None  # these rules never end
    return found.replace(tzinfo=tz)


def first_occurrence(repeat: Repeat | None, due: datetime) -> datetime:
    """A repeating reminder starts on its first real occurrence ("every weekday 18:00" asked on Saturday)."""
    if repeat is None:
        return due
    return next_occurrence(repeat, due, due - timedelta(seconds=1))
