"""What the prompt files must hold: a template's variables, and for prompts/tools.yaml and the `reminders`
section of replies.yaml every tool's description and status line, the results the model is given, and
each reminder sentence with its variables; chat.yaml's `attachments` and replies.yaml's `media`."""

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


def check_section(
    path: Path, name: str, section: Any, templates: dict[str, frozenset[str]]
) -> dict[str, Any]:
    """A mapping of templates (replies.yaml `reminders`, `media`; chat.yaml `attachments`): each present,
    each with only its allowed variables."""
    if not isinstance(section, dict):
        raise PromptError(f"{path}: {name} must be a mapping")
    for key, allowed in templates.items():
        check_template(section.get(key), allowed, f"{path}: {name}.{key}")
    return section


def check_reminder_replies(path: Path, replies: dict[str, Any]) -> None:
    reminders = check_section(path, "reminders", replies.get("reminders"), _REMINDER_REPLIES)
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


_ATTACHMENTS: dict[str, frozenset[str]] = {
    "picture": frozenset(),
    "file": frozenset({"name"}),
    "document": frozenset({"name", "type", "size", "text"}),
    "size": frozenset({"pages", "unit", "chars"}),
    "size_no_pages": frozenset({"chars"}),
    "cut": frozenset({"limit"}),
    "earlier": frozenset(),
    "picture_alone": frozenset(),
    "file_alone": frozenset(),
}

_MEDIA_REPLIES: dict[str, frozenset[str]] = {
    "no_credentials": frozenset(),
    "too_large": frozenset({"name", "limit"}),
    "expired": frozenset({"name"}),
    "unreachable": frozenset({"name"}),
    "unsupported": frozenset({"name", "type"}),
    "broken": frozenset({"name"}),
    "too_many_pixels": frozenset({"name", "limit"}),
    "encrypted": frozenset({"name"}),
    "empty": frozenset({"name"}),
    "too_hard": frozenset({"name"}),
    "picture_name": frozenset(),
    "too_many_pictures": frozenset({"limit"}),
    "images_unsupported": frozenset(),
}


def check_attachments(path: Path, attachments: Any) -> dict[str, str]:
    """chat.yaml `attachments`: every mark and block, and the document block must hold the text."""
    attachments = check_section(path, "attachments", attachments, _ATTACHMENTS)
    if "text" not in fields(attachments["document"]):
        raise PromptError(f"{path}: attachments.document must contain {{text}}")
    return {key: str(attachments[key]) for key in _ATTACHMENTS}


def check_media_replies(path: Path, replies: dict[str, Any]) -> None:
    check_section(path, "media", replies.get("media"), _MEDIA_REPLIES)
