"""When a reminder is due: the model's forms of a time, repeat words, recurrence across month ends and DST,
and the mock model's reading of common reminder phrasings."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.model.mock_tools import tool_calls_for
from agent.storage.database import Database
from agent.tools.reminders import ReminderBook
from agent.tools.when import ReminderProblem, Repeat, next_occurrence, parse_repeat, resolve_when

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_times_in_the_models_forms_resolve_against_now() -> None:
    now = datetime(2026, 12, 3, 21, 17, 30, tzinfo=SHANGHAI)
    assert resolve_when("PT3M", now) == now + timedelta(minutes=3)
    assert resolve_when("P1DT2H", now) == now + timedelta(days=1, hours=2)
    assert resolve_when("2026-12-04T09:00", now) == datetime(2026, 12, 4, 9, 0, tzinfo=SHANGHAI)
    assert resolve_when("2026-12-04T01:00Z", now) == datetime(2026, 12, 4, 9, 0, tzinfo=SHANGHAI)
    for bad in ("明天", "PT", "2026-13-40T99:00", ""):
        with pytest.raises(ReminderProblem) as caught:
            resolve_when(bad, now)
        assert caught.value.key == "bad_time"


def test_repeat_words() -> None:
    assert parse_repeat(None) is None
    assert parse_repeat("") is None
    assert parse_repeat("每个工作日") is Repeat.WEEKDAYS
    assert parse_repeat("Monthly") is Repeat.MONTHLY
    with pytest.raises(ReminderProblem):
        parse_repeat("every full moon")


def test_monthly_on_the_31st_falls_on_the_last_day_of_shorter_months() -> None:
    anchor = datetime(2027, 1, 31, 9, 0, tzinfo=SHANGHAI)
    seen, at = [], anchor
    for _ in range(4):
        at = next_occurrence(Repeat.MONTHLY, anchor, at)
        seen.append(at.date().isoformat())
    assert seen == ["2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]


def test_weekdays_skip_the_weekend_and_daily_keeps_the_wall_time_across_dst() -> None:
    friday = datetime(2026, 12, 4, 18, 0, tzinfo=SHANGHAI)
    assert next_occurrence(Repeat.WEEKDAYS, friday, friday).date().isoformat() == "2026-12-07"
    new_york = ZoneInfo("America/New_York")
    anchor = datetime(2027, 3, 13, 9, 0, tzinfo=new_york)  # the clocks go forward on March 14
    after = next_occurrence(Repeat.DAILY, anchor, anchor)
    assert (after.hour, after.utcoffset()) == (9, timedelta(hours=-4))
    assert after.timestamp() - anchor.timestamp() == 23 * 3600  # a day of 23 hours


def test_a_duration_is_elapsed_time_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2025, 10, 26, 2, 30, tzinfo=berlin)  # the first 02:30 (CEST); the clocks go back at 03:00
    assert resolve_when("PT1H", now).timestamp() - now.timestamp() == 3600


def test_a_repeating_reminder_whose_time_passed_today_starts_tomorrow(tmp_path: Any) -> None:
    async def go() -> datetime:
        database = Database(tmp_path / "r.db")
        await database.open()
        try:
            at_ten = datetime(2026, 12, 3, 10, 5, tzinfo=SHANGHAI).timestamp()
            book = ReminderBook(database, timezone=SHANGHAI, max_per_person=5, clock=lambda: at_ten)
            return book.plan("2026-12-03T09:00", "喝水", "daily").due
        finally:
            await database.close()

    assert asyncio.run(go()) == datetime(2026, 12, 4, 9, 0, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("text", "call"),
    [
        ("3分钟后提醒我喝水", {"when": "PT3M", "text": "喝水"}),
        ("半小时后提醒我开会", {"when": "PT30M", "text": "开会"}),
        ("两小时后提醒我收快递。", {"when": "PT2H", "text": "收快递"}),
        ("明天上午9点提醒我交周报", {"when": "2026-12-04T09:00", "text": "交周报"}),
        ("明天下午3点半提醒我打电话", {"when": "2026-12-04T15:30", "text": "打电话"}),
        ("下周一早上提醒我周会", {"when": "2026-12-07T09:00", "text": "周会"}),
        (
            "每个工作日 18:00 提醒我写日报",
            {"when": "2026-12-03T18:00", "text": "写日报", "repeat": "weekdays"},
        ),
        ("remind me in 20 minutes to call Li", {"when": "PT20M", "text": "call Li"}),
        (
            "remind me tomorrow at 9am to send the report",
            {"when": "2026-12-04T09:00", "text": "send the report"},
        ),
    ],
)
def test_the_mock_model_reads_common_reminder_phrasings(text: str, call: dict[str, Any]) -> None:
    system = "当前时间：2026-12-03 10:05 星期四（时区 Asia/Shanghai）"
    [made] = tool_calls_for(text, system, {"set_reminder", "list_reminders", "cancel_reminder"})
    assert made["name"] == "set_reminder"
    assert made["args"] == call
