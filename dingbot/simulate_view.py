"""How DingTalk shows a reply, as terminal text: for `dingbot simulate`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EMPHASIS = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")


def render_markdown(text: str) -> str:
    """DingTalk's Markdown subset as plain terminal text: headings, lists, quotes, links, images, bold."""
    out: list[str] = []
    in_code = False
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            out.append(f"    {line}")
            continue
        heading = _HEADING.match(line)
        if heading:
            line = heading.group(2)
        elif (quote := _QUOTE.match(line)) is not None:
            line = f"│ {quote.group(1)}"
        elif (bullet := _BULLET.match(line)) is not None:
            line = f"{bullet.group(1)}• {bullet.group(2)}"
        line = _IMAGE.sub(lambda m: f"[图片{': ' + m.group(1) if m.group(1) else ''}] {m.group(2)}", line)
        line = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", line)
        line = _STRONG.sub(r"\2", line)
        line = _EMPHASIS.sub(r"\1", line)
        out.append(line)
    return "\n".join(out)


def show_mentions(text: str, at: dict[str, Any], nicks: dict[str, str]) -> tuple[str, list[str]]:
    """`@<staffId>` written for a person in `at.atUserIds` shows as `@<nick>` in DingTalk."""
    names: list[str] = []
    ids = at.get("atUserIds") if isinstance(at.get("atUserIds"), list) else []
    for staff_id in ids or []:
        name = nicks.get(str(staff_id), str(staff_id))
        text = re.sub(f"@{re.escape(str(staff_id))}(?![\\w-])", f"@{name}", text)
        names.append(name)
    mobiles = at.get("atMobiles") if isinstance(at.get("atMobiles"), list) else []
    for mobile in mobiles or []:
        names.append(str(mobile))
    if at.get("isAtAll") is True:
        names.append("所有人")
    return text, names


@dataclass(frozen=True, slots=True)
class Part:
    """One post to the session webhook."""

    seconds: float  # from sending the callback
    body: bytes


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def describe(part: Part, bot_name: str, nicks: dict[str, str], label: str = "") -> str:
    """One reply message as DingTalk shows it: who, when, the chat-list preview for Markdown, the text."""
    try:
        message = json.loads(part.body)
    except ValueError:
        message = None
    when = f"{part.seconds:.2f} s{label}"
    if not isinstance(message, dict):
        shown = part.body.decode(errors="replace")
        return f"{bot_name} · {when} · not JSON (DingTalk would refuse it)\n{shown}"
    msgtype = message.get("msgtype")
    notes: list[str] = []
    if msgtype == "text":
        text = str(_object(message.get("text")).get("content") or "")
    elif msgtype == "markdown":
        markdown = _object(message.get("markdown"))
        title = str(markdown.get("title") or "")
        notes.append(f"Markdown, chat list shows “{title}”" if title else "Markdown without a title")
        text = render_markdown(str(markdown.get("text") or ""))
    else:  # actionCard, link, feedCard: not rendered, shown as sent
        return f"{bot_name} · {when} · {msgtype} message\n{json.dumps(message, ensure_ascii=False, indent=2)}"
    text, mentioned = show_mentions(text, _object(message.get("at")), nicks)
    if mentioned:
        notes.append("@" + " @".join(mentioned))
    return " · ".join([bot_name, when, *notes]) + f"\n{text}"
