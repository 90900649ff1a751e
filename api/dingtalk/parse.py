"""Parse a DingTalk robot callback body into a channel-neutral IncomingMessage.

Field facts are in ../shared/dingtalk-protocol.md. Unknown fields are ignored, never rejected.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent.messages import ContentKind, IncomingMessage, Media

REQUIRED_FIELDS = ("msgId", "msgtype", "conversationId", "conversationType", "senderId", "sessionWebhook")
_MENTION_ONLY = re.compile(r"^\s*@\S+\s*$")
_DIGITS = re.compile(r"[0-9]{1,18}")
_MESSAGE_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces: safe to log
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# Control characters are never meaningful in a message, and NUL cannot be stored in PostgreSQL text.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DOWNLOAD_CODE = re.compile(r"[\x21-\x7e]{1,4096}")  # an opaque printable token


class PayloadError(Exception):
    """The body is not a usable callback. The message is a reason safe to return to the caller."""


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _content(body: dict[str, Any]) -> dict[str, Any]:
    """`content` arrives as an object or as a JSON string: accept both."""
    content = body.get("content")
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except ValueError:
            return {}
    return content if isinstance(content, dict) else {}


def _code(part: dict[str, Any]) -> str:
    code = part.get("downloadCode") or part.get("pictureDownloadCode")
    return code if isinstance(code, str) and _DOWNLOAD_CODE.fullmatch(code) else ""


def _rich_text(body: dict[str, Any]) -> tuple[str, tuple[Media, ...]] | None:
    """Rich text's words and pictures in order, the leading @bot part removed: each picture records
    where in the text it sat."""
    parts = _content(body).get("richText")
    if not isinstance(parts, list):
        return None
    parts = [p for p in parts if isinstance(p, dict)]
    while parts and isinstance(parts[0].get("text"), str) and _MENTION_ONLY.match(parts[0]["text"]):
        parts.pop(0)  # the leading @bot part
    text, media = "", []
    for part in parts:
        if isinstance(part.get("text"), str):
            text += _clean(part["text"])
        elif part.get("type", "picture") == "picture" and _code(part):
            media.append(Media("picture", _code(part), at=len(text)))
    stripped = text.lstrip()
    shift = len(text) - len(stripped)
    return stripped.rstrip(), tuple(Media(m.kind, m.code, at=max(0, m.at - shift)) for m in media)


def _read(msgtype: str, body: dict[str, Any]) -> tuple[str, tuple[Media, ...]] | None:
    """The words and attachments in the message, or None when this type carries nothing the bot reads."""
    if msgtype == "text":
        text = body.get("text")
        content = text.get("content") if isinstance(text, dict) else None
        return (content if isinstance(content, str) else ""), ()
    if msgtype == "richText":
        return _rich_text(body)
    if msgtype == "audio":
        recognition = _content(body).get("recognition")
        return (recognition, ()) if isinstance(recognition, str) and recognition.strip() else None
    if msgtype == "picture":
        code = _code(_content(body))
        return ("", (Media("picture", code),)) if code else None
    if msgtype == "file":
        content = _content(body)
        name = content.get("fileName")
        code = _code(content)
        return (
            ("", (Media("file", code, _clean(name)[:200] if isinstance(name, str) else ""),))
            if code
            else None
        )
    return None


def _clean(text: str) -> str:
    """JSON may carry lone surrogates (\\ud800) that cannot be encoded again: replaced; control characters
    (NUL among them, which PostgreSQL text cannot hold) removed."""
    return _CONTROLS.sub("", _SURROGATES.sub("\ufffd", text))


def _text_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    return _clean(value) if isinstance(value, str) else ""


def person_id(body: dict[str, Any]) -> str:
    """A person is senderCorpId + senderStaffId, falling back to the (encrypted) senderId — also when the
    corp is missing, since a bare staff id is only unique within one organisation.

    No two senders can get the same id, whatever the fields hold: `corp:staff` only for a corp id without
    ":" that does not start with "$"; DingTalk's encrypted senderIds ("$:LWCP_v1:$...") as they are; any
    other senderId as "$id:<senderId>" — which neither of the other two forms can be.
    """
    staff = body.get("senderStaffId")
    corp = body.get("senderCorpId")
    corp_ok = isinstance(corp, str) and corp != "" and ":" not in corp and not corp.startswith("$")
    if isinstance(staff, str) and staff and corp_ok:
        return f"{corp}:{staff}"
    sender = str(body["senderId"])
    return sender if sender.startswith("$:") else f"$id:{sender}"


def _mentions_someone_else(body: dict[str, Any]) -> bool:
    """In a group, a message that explicitly does not @ this bot (isInAtList false, bot not in atUsers)."""
    if body.get("isInAtList") is not False:
        return False
    bot = body.get("chatbotUserId")
    at_users = body.get("atUsers")
    if not isinstance(at_users, list) or not at_users:
        return False
    return not any(isinstance(u, dict) and u.get("dingtalkId") == bot for u in at_users)


def parse_callback(raw: bytes) -> IncomingMessage:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PayloadError("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise PayloadError("body must be a JSON object")
    for field in REQUIRED_FIELDS:
        value = body.get(field)
        if value is None or value == "":
            raise PayloadError(f"missing field: {field}")
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise PayloadError(f"field {field} must be a string")
    if not _MESSAGE_ID.fullmatch(str(body["msgId"])):
        raise PayloadError("field msgId must be 1-128 printable ASCII characters")
    conversation_type = str(body["conversationType"])
    if conversation_type not in ("1", "2"):
        raise PayloadError('field conversationType must be "1" or "2"')
    msgtype = str(body["msgtype"])
    is_group = conversation_type == "2"

    read = _read(msgtype, body)
    media: tuple[Media, ...] = ()
    if read is None:
        kind = ContentKind.UNSUPPORTED
        text = ""
    else:
        text, media = read
        text = _clean(text).strip() if not media else text
        kind = ContentKind.MEDIA if media else ContentKind.TEXT if text else ContentKind.EMPTY

    nick = body.get("senderNick")
    staff = body.get("senderStaffId")
    title = body.get("conversationTitle")
    return IncomingMessage(
        message_id=str(body["msgId"]),
        conversation_id=_clean(str(body["conversationId"])),
        is_group=is_group,
        person_id=_clean(person_id(body)),
        sender_id=_clean(str(body["senderId"])),
        sender_staff_id=_clean(staff) if isinstance(staff, str) else "",
        sender_nick=_clean(nick) if isinstance(nick, str) else "",
        text=text,
        kind=kind,
        original_type=msgtype,
        conversation_title=_clean(title) if isinstance(title, str) else "",
        created_at_ms=_as_int(body.get("createAt")),
        reply_url=str(body["sessionWebhook"]),
        reply_url_expires_ms=_as_int(body.get("sessionWebhookExpiredTime")),
        addressed_to_bot=not (is_group and _mentions_someone_else(body)),
        bot_id=_text_field(body, "robotCode"),
        org_id=_text_field(body, "chatbotCorpId"),
        media=media,
    )
