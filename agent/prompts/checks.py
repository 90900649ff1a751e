"""What the prompt files must hold: a template's variables, and for prompts/tools.yaml and the `reminders`
section of replies.yaml every tool's description and status line, the results the model is given, and
each reminder sentence with its variables."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from agent.errors import PromptError


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def check_template(template: Any, allowed: frozenset[str], where: str) -> str:
    if not isinstance(template, str) or not template.strip():
        raise PromptError(f"{where}: must be a non-empty text")
    try:
        names = fields(template)
    except ValueError as exc:
        raise PromptError(
            f"{where}: invalid template ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    unknown = names - allowed
    if unknown:
        raise PromptError(f"{where}: unknown variable(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return template


def check_reminder_replies(path: Path, replies: dict[str, Any]) -> None:
    reminders = replies.get("reminders")
    if not isinstance(reminders, dict):
        raise PromptError(f"{path}: reminders must be a mapping")
    for key, allowed in _REMINDER_REPLIES.items():
        check_template(reminders.get(key), allowed, f"{path}: reminders.{key}")
    for group in ("repeat_names", "unreachable_why"):
        if not isinstance(reminders.get(group), dict):
            raise PromptError(f"{path}: reminders.{group} must be a mapping")


_REMINDER_REPLIES: dict[str, frozenset[str]] = {
    "set": frozenset({"when", "text"}),
    "set_repeat": frozenset({"when", "text", "repeat"}),
    "fired": frozenset({"text"}),
    "late": frozenset({"due", "late"}),
    "minutes": frozenset({"n"}),
    "list": frozenset({"count", "items"}),
    "item": frozenset({"number", "when", "repeat", "text"}),
    "empty": frozenset(),
    "cancelled": frozenset({"when", "text"}),
    "bad_number": frozenset({"number", "count"}),
    "not_found": frozenset(),
    "past": frozenset({"when"}),
    "too_far": frozenset(),
    "too_many": frozenset({"limit"}),
    "bad_time": frozenset({"when"}),
    "bad_repeat": frozenset({"repeat"}),
    "no_text": frozenset(),
    "unavailable": frozenset(),
    "unreachable": frozenset({"why", "settings"}),
    "unreachable_before": frozenset({"why", "before"}),
}
_TOOLS = ("set_reminder", "list_reminders", "cancel_reminder")
_TOOL_RESULTS: dict[str, frozenset[str]] = {
    "failed": frozenset({"tool", "reason"}),
    "timeout": frozenset({"tool", "seconds"}),
    "unknown": frozenset({"tool"}),
    "too_many": frozenset({"limit"}),
    "cut": frozenset({"limit"}),
    "untrusted_start": frozenset({"tool"}),
    "untrusted_end": frozenset(),
}


def check_tools(path: Path, tools: dict[str, Any]) -> None:
    for name in _TOOLS:
        tool = tools.get(name)
        if not isinstance(tool, dict):
            raise PromptError(f"{path}: {name} must be a mapping with a description")
        check_template(tool.get("description"), frozenset(), f"{path}: {name}.description")
        check_template(tool.get("status"), frozenset(), f"{path}: {name}.status")
        for arg, text in (tool.get("args") or {}).items():
            check_template(text, frozenset(), f"{path}: {name}.args.{arg}")
    check_template(tools.get("mcp_status"), frozenset({"tool"}), f"{path}: mcp_status")
    results = tools.get("results")
    if not isinstance(results, dict):
        raise PromptError(f"{path}: results must be a mapping")
    for key, allowed in _TOOL_RESULTS.items():
        check_template(results.get(key), allowed, f"{path}: results.{key}")
