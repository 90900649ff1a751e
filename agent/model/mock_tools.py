"""Mock mode acts too: a few reminder phrasings (Chinese and English) and "use tool NAME {json}" become
real tool calls, so FORCE_MOCK_OPENAI=1 shows a reminder set, listed, fired and cancelled, and an MCP
tool called, without a model. Times are resolved against the `now` the system prompt carries."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

_NOW = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2})")
_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_NUMBER = r"\d+|[零一二两三四五六七八九十]+|半"
_UNITS = {"秒": "S", "秒钟": "S", "分钟": "M", "分": "M", "小时": "H", "个小时": "H", "天": "D"}
_EN_UNITS = {"second": "S", "minute": "M", "min": "M", "hour": "H", "day": "D"}

_RELATIVE_ZH = re.compile(rf"({_NUMBER})\s*(秒钟|秒|分钟|分|个小时|小时|天)(?:之|以)?后\s*提醒我\s*(.+)")
_RELATIVE_EN = re.compile(
    r"remind me (?:in|after) (\d+) ?(second|minute|min|hour|day)s? (?:to |that |about )?(.+)"
    r"|in (\d+) ?(second|minute|min|hour|day)s?,? remind me (?:to |that |about )?(.+)",
    re.I,
)
_REPEATS_ZH = (("每个工作日", "weekdays"), ("工作日", "weekdays"), ("每天", "daily"), ("每周", "weekly"))
_CLOCK_ZH = re.compile(
    r"(今天|明天|后天|昨天|下周[一二三四五六日天])?\s*(上午|早上|中午|下午|晚上)?\s*"
    rf"(?:({_NUMBER})\s*[点:：时]\s*(\d{{1,2}}|半)?分?)?\s*提醒我\s*(.+)"
)
_CLOCK_EN = re.compile(
    r"remind me (tomorrow|today)? ?at (\d{1,2})(?::(\d{2}))? ?(am|pm)? (?:to |that |about )?(.+)", re.I
)
_LIST = re.compile(
    r"我的提醒|有哪些提醒|查看提醒|提醒列表|list (?:my )?reminders|what are my reminders", re.I
)
_CANCEL = re.compile(
    r"取消(?:第)?\s*#?(\d+)\s*(?:号|条|个)?提醒|取消提醒\s*#?(\d+)|cancel reminder #?(\d+)", re.I
)
_USE_TOOL = re.compile(r"(?:用工具|使用工具|调用工具|use tool)\s+([\w.-]+)\s*(\{.*\})?", re.I | re.S)
_WEEKDAYS = "一二三四五六日"


def _number(text: str) -> int:
    if text.isdigit():
        return int(text)
    if text == "半":
        return 30  # 半小时: read by the caller as 30 minutes
    if "十" in text:
        tens, _, ones = text.partition("十")
        return _DIGITS.get(tens, 1) * 10 + _DIGITS.get(ones, 0)
    return _DIGITS.get(text, 0)


def now_from(system_text: str) -> datetime:
    """The prompt's `now` (local, naive), else this machine's clock."""
    found = _NOW.search(system_text)
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M") if found else datetime.now()


def _call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "args": args, "id": f"call_mock_{name}", "type": "tool_call"}


def _clean(text: str) -> str:
    return text.strip().rstrip("。.!！")


def _repeat_of(text: str) -> tuple[str | None, str]:
    for word, repeat in _REPEATS_ZH:
        if text.startswith(word):
            return repeat, text[len(word) :]
    match = re.match(r"every (weekday|day|week|month)s?\s*", text, re.I)
    if match:
        names = {"weekday": "weekdays", "day": "daily", "week": "weekly", "month": "monthly"}
        return names[match.group(1).lower()], text[match.end() :]
    return None, text


def _clock_zh(text: str, now: datetime) -> dict[str, Any] | None:
    repeat, rest = _repeat_of(text.strip())
    match = _CLOCK_ZH.search(rest)
    if not match or not (match.group(1) or match.group(3) or repeat):
        return None
    day, part, hour_text, minute_text, what = match.groups()
    hour = _number(hour_text) if hour_text else 9  # "下周一早上": 09:00
    minute = 30 if minute_text == "半" else int(minute_text or 0)
    if part in ("下午", "晚上") and hour < 12:
        hour += 12
    date = now.date()
    if day == "明天":
        date += timedelta(days=1)
    elif day == "后天":
        date += timedelta(days=2)
    elif day == "昨天":  # a real model resolves it too; the tool says it is past
        date -= timedelta(days=1)
    elif day and day.startswith("下周"):
        weekday = _WEEKDAYS.index(day[-1]) if day[-1] in _WEEKDAYS else 6
        date += timedelta(days=7 - now.weekday() + weekday)
    due = datetime.combine(date, datetime.min.time()).replace(hour=hour % 24, minute=minute)
    if due <= now and not day:  # "18:00 提醒我" said after 18:00: tomorrow
        due += timedelta(days=1)
    args: dict[str, Any] = {"when": due.strftime("%Y-%m-%dT%H:%M"), "text": _clean(what)}
    if repeat:
        args["repeat"] = repeat
    return args


def _clock_en(text: str, now: datetime) -> dict[str, Any] | None:
    match = _CLOCK_EN.search(text)
    if not match:
        return None
    day, hour_text, minute_text, half, what = match.groups()
    hour = int(hour_text) % 12 + (12 if (half or "").lower() == "pm" else 0) if half else int(hour_text)
    date = now.date() + timedelta(days=1 if (day or "").lower() == "tomorrow" else 0)
    due = datetime.combine(date, datetime.min.time()).replace(hour=hour % 24, minute=int(minute_text or 0))
    return {"when": due.strftime("%Y-%m-%dT%H:%M"), "text": _clean(what)}


def tool_calls_for(text: str, system_text: str, tools: set[str]) -> list[dict[str, Any]]:
    """The tool calls a real model would make for `text`, for the phrasings the mock knows; [] else."""
    text = text.strip()
    use = _USE_TOOL.search(text)
    if use and use.group(1) in tools:
        try:
            args = json.loads(use.group(2)) if use.group(2) else {}
        except ValueError:
            args = {}
        return [_call(use.group(1), args if isinstance(args, dict) else {})]
    if "cancel_reminder" in tools:
        cancel = _CANCEL.search(text)
        if cancel:
            number = next(g for g in cancel.groups() if g)
            return [_call("cancel_reminder", {"id": int(number)})]
    if "list_reminders" in tools and _LIST.search(text):
        return [_call("list_reminders", {})]
    if "set_reminder" not in tools:
        return []
    relative = _RELATIVE_ZH.search(text)
    if relative:
        amount, unit, what = relative.groups()
        value, code = _number(amount), _UNITS[unit]
        if amount == "半":  # 半小时 / 半分钟
            value, code = (30, "M") if code == "H" else (30, "S")
        prefix = "P" if code == "D" else "PT"
        return [_call("set_reminder", {"when": f"{prefix}{value}{code}", "text": _clean(what)})]
    english = _RELATIVE_EN.search(text)
    if english:
        groups = english.groups()
        amount, unit, what = groups[0:3] if groups[0] else groups[3:6]
        code = _EN_UNITS[unit.lower()]
        prefix = "P" if code == "D" else "PT"
        return [_call("set_reminder", {"when": f"{prefix}{amount}{code}", "text": _clean(what)})]
    now = now_from(system_text)
    args = _clock_zh(text, now) or _clock_en(text, now)
    return [_call("set_reminder", args)] if args else []
