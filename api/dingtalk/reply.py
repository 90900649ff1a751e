"""Reply bodies for session webhooks, and the rule that decides which webhooks we post to."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import yarl

from agent.messages import IncomingMessage, Reply

_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def _origin(url: str) -> tuple[str, str, int]:
    """Scheme, host and port as both our HTTP clients read the URL: aiohttp's parser (yarl: the reply
    sender) and httpx's (the file API). A URL they read differently is refused (ValueError), so the check
    and the send always agree on the host ("http://evil.com\\@oapi.dingtalk.com/" is DingTalk to httpx)."""
    parsed, other = httpx.URL(url), yarl.URL(url)
    scheme = parsed.scheme.lower()
    default = 443 if scheme == "https" else 80
    origin = (scheme, parsed.host.lower(), parsed.port or default)
    if origin != ((other.scheme or "").lower(), (other.host or "").lower(), other.port or default):
        raise ValueError("the URL parsers disagree about where this URL goes")
    return origin


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_allowed(url: str, bases: list[str], *, loopback: bool = False) -> bool:
    """A session webhook comes from the request body: post only to a configured DingTalk origin, and
    with `loopback` (mock mode: trying the service on one machine) also to this machine."""
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return False  # whitespace or control characters: parsers disagree on such URLs
    try:
        origin = _origin(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return False
    if origin[0] not in ("http", "https") or not origin[1]:
        return False
    return any(origin == _origin(b) for b in bases) or (loopback and is_loopback_host(origin[1]))


# HTML elements a model may write into Markdown; DingTalk's Markdown renders some of them (a link, an image
# that fetches a URL of the model's choosing, colours). Other words in angle brackets ("List<String>",
# "a<b>c") are left alone, and so is everything inside code.
_HTML_ELEMENTS = (
    "a|abbr|audio|b|big|blockquote|body|br|button|center|code|del|details|div|em|embed|font|form|h[1-6]|head"
    "|hr|html|i|iframe|img|input|ins|kbd|li|link|mark|meta|object|ol|p|picture|pre|q|s|script|section|small"
    "|source|span|strike|strong|style|sub|summary|sup|svg|table|tbody|td|textarea|tfoot|th|thead|title|tr|tt"
    "|u|ul|video"
)
_HTML_TAG = re.compile(rf"<!--.*?-->|</?(?:{_HTML_ELEMENTS})(?:\s[^<>]*)?/?>", re.IGNORECASE | re.DOTALL)
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)


def without_html(text: str) -> str:
    """The model's Markdown with HTML tags (and comments) removed, their inner text kept; code untouched."""
    out: list[str] = []
    last = 0
    for code in _CODE.finditer(text):
        out.append(_HTML_TAG.sub("", text[last : code.start()]))
        out.append(code.group(0))
        last = code.end()
    out.append(_HTML_TAG.sub("", text[last:]))
    return "".join(out)


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


WEBHOOK_MAX_BYTES = 19_000  # DingTalk rejects bodies over 20,000 bytes (460101); keep a margin
# A stored reply may have to go out by the OpenAPI send, whose msgParam is capped at 15,000 bytes: a
# body under this fits both routes (msgParam is the body's message part, so never longer than the body).
REPLY_MAX_BYTES = 14_500


@dataclass(frozen=True, slots=True)
class Route:
    """Where a reply goes: the session webhook first, the OpenAPI send to the same conversation after."""

    webhook: str  # a credential: never logged
    webhook_expires_ms: int | None
    conversation_id: str  # openConversationId, for the group send
    is_group: bool
    user_id: str  # staff id, for the one-to-one send (empty for external users: no fallback)
    robot_code: str
    webhook_dead: bool = False  # DingTalk said 300001: do not try the webhook again
    card_id: str = ""  # the AI card the answer streamed into (outTrackId): finished first, if any

    @classmethod
    def for_message(cls, message: IncomingMessage, default_robot_code: str = "") -> Route:
        return cls(
            webhook=message.reply_url,
            webhook_expires_ms=message.reply_url_expires_ms,
            conversation_id=message.conversation_id,
            is_group=message.is_group,
            user_id=message.sender_staff_id,
            robot_code=message.bot_id or default_robot_code,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Route:
        data = json.loads(text)
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def webhook_usable(self, now_ms: int, margin_ms: int = 30_000) -> bool:
        if not self.webhook or self.webhook_dead:
            return False
        return self.webhook_expires_ms is None or self.webhook_expires_ms - margin_ms > now_ms


def encode_body(body: dict[str, Any]) -> bytes:
    """The exact bytes sent: UTF-8 JSON, non-ASCII kept as is (3 bytes a Chinese character, not 6)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _mention(message: IncomingMessage) -> tuple[str, dict[str, Any]]:
    at: dict[str, Any] = {"isAtAll": False}
    if not message.is_group:
        return "", at
    if message.sender_staff_id:
        at["atUserIds"] = [message.sender_staff_id]
        return f"@{message.sender_staff_id}", at
    return (f"@{message.sender_nick}" if message.sender_nick else ""), at


def _body(text: str, reply: Reply, mention: str, at: dict[str, Any]) -> dict[str, Any]:
    if reply.markdown:
        shown = f"{text}\n\n{mention}" if mention else text
        return {"msgtype": "markdown", "markdown": {"title": reply.title, "text": shown}, "at": at}
    return {"msgtype": "text", "text": {"content": f"{mention} {text}" if mention else text}, "at": at}


def _pieces(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Split on line breaks into pieces that fit; a line too long on its own is cut by characters."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        if fits(candidate):
            current = candidate
            continue
        if current:
            pieces.append(current)
        while not fits(line):
            low, high = 1, len(line)  # the longest prefix that fits, by bisection
            while low < high:
                middle = (low + high + 1) // 2
                low, high = (middle, high) if fits(line[:middle]) else (low, middle - 1)
            pieces.append(line[:low])
            line = line[low:]
        current = line
    if current or not pieces:
        pieces.append(current)
    return pieces


def build_reply_bodies(
    message: IncomingMessage, reply: Reply, max_bytes: int = WEBHOOK_MAX_BYTES
) -> list[dict[str, Any]]:
    """The JSON bodies for `POST <sessionWebhook>`: text, or markdown when the reply has structure.

    In groups the sender is @-mentioned: the staff id goes in `at.atUserIds` and `@<staffId>` in the
    text (DingTalk needs both). Without a staff id only the nick can be written, with no notification.
    A reply whose encoded body would exceed `max_bytes` is split on line breaks into several messages;
    only the first one carries the mention.
    """
    mention, at = _mention(message)
    text = tables_to_lists(without_html(reply.text)) if reply.markdown else reply.text
    whole = _body(text, reply, mention, at)
    if len(encode_body(whole)) <= max_bytes:
        return [whole]
    plain_at: dict[str, Any] = {"isAtAll": False}

    def fits(mention: str, at: dict[str, Any]) -> Callable[[str], bool]:
        return lambda piece: len(encode_body(_body(piece, reply, mention, at))) <= max_bytes

    first = _pieces(text, fits(mention, at))[0]
    rest = _pieces(text[len(first) :].lstrip("\n"), fits("", plain_at)) if len(first) < len(text) else []
    return [_body(first, reply, mention, at)] + [_body(p, reply, "", plain_at) for p in rest if p]
