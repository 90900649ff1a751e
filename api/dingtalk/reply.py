"""Reply bodies for session webhooks, and the rule that decides which webhooks we post to."""

from __future__ import annotations

import re
from typing import Any

import httpx

from agent.messages import IncomingMessage, Reply

_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def _origin(url: str) -> tuple[str, str, int]:
    # httpx's own parser: the one the sender uses, so the check and the send agree on the host.
    parsed = httpx.URL(url)
    scheme = parsed.scheme.lower()
    return scheme, parsed.host.lower(), parsed.port or (443 if scheme == "https" else 80)


def webhook_allowed(url: str, bases: list[str]) -> bool:
    """A session webhook comes from the request body: post only to a configured DingTalk origin."""
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return False  # whitespace or control characters: parsers disagree on such URLs
    try:
        origin = _origin(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return False
    return origin[0] in ("http", "https") and bool(origin[1]) and any(origin == _origin(b) for b in bases)


def tables_to_lists(text: str) -> str:
    """DingTalk does not render Markdown tables reliably: turn each row into a list item."""
    lines = text.splitlines()
    out: list[str] = []
    header: list[str] | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        is_row = stripped.startswith("|") and stripped.endswith("|") and stripped.count("|") >= 2
        if not is_row:
            header = None
            out.append(line)
            continue
        if _TABLE_SEPARATOR.match(stripped):
            continue
        cells = [c.strip() for c in stripped.strip("|").split("|")]
        next_is_separator = i + 1 < len(lines) and _TABLE_SEPARATOR.match(lines[i + 1].strip())
        if header is None and next_is_separator:
            header = cells
            continue
        if header and len(header) == len(cells):
            out.append("- " + "；".join(f"{h}：{c}" for h, c in zip(header, cells, strict=True)))
        else:
            out.append("- " + " / ".join(cells))
    return "\n".join(out)


def build_reply_body(message: IncomingMessage, reply: Reply) -> dict[str, Any]:
    """The JSON for `POST <sessionWebhook>`: text, or markdown when the reply has structure.

    In groups the sender is @-mentioned: the staff id goes in `at.atUserIds` and `@<staffId>` in the
    text (DingTalk needs both). Without a staff id only the nick can be written, with no notification.
    """
    mention = ""
    at: dict[str, Any] = {"isAtAll": False}
    if message.is_group:
        if message.sender_staff_id:
            mention = f"@{message.sender_staff_id}"
            at["atUserIds"] = [message.sender_staff_id]
        elif message.sender_nick:
            mention = f"@{message.sender_nick}"
    if reply.markdown:
        text = tables_to_lists(reply.text)
        if mention:
            text = f"{text}\n\n{mention}"
        return {"msgtype": "markdown", "markdown": {"title": reply.title, "text": text}, "at": at}
    content = f"{mention} {reply.text}" if mention else reply.text
    return {"msgtype": "text", "text": {"content": content}, "at": at}
