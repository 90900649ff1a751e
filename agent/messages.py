"""Channel-neutral message types: what the agent receives and what it answers."""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from dataclasses import dataclass
from typing import Any

import orjson


class ContentKind(enum.StrEnum):
    TEXT = "text"  # plain text, rich text's text parts, or recognised speech
    EMPTY = "empty"  # a mention with nothing after it
    MEDIA = "media"  # pictures or a file (rich text: words and pictures), fetched when answered
    UNSUPPORTED = "unsupported"  # videos, voice with no recognised words, anything the bot cannot read


@dataclass(frozen=True, slots=True)
class Media:
    """A picture or file attached to a message, fetched only when the message is answered."""

    kind: str  # "picture" or "file"
    code: str  # the channel's handle to fetch it by (DingTalk downloadCode): never logged
    name: str = ""  # the file name as sent: shown to people, never trusted for the type
    at: int = 0  # where it sat in the message's text (rich text: pictures between words), in characters


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message from a person, already verified and parsed by a channel."""

    message_id: str
    conversation_id: str
    is_group: bool
    person_id: str  # who the person is, stable across conversations (corp + staff id, else sender id)
    sender_id: str
    sender_staff_id: str  # may be empty (external users)
    sender_nick: str
    text: str
    kind: ContentKind = ContentKind.TEXT
    original_type: str = "text"  # the channel's own type name, e.g. "picture"
    conversation_title: str = ""
    created_at_ms: int | None = None
    reply_url: str = ""  # where a reply goes (a DingTalk session webhook); a credential, never logged
    reply_url_expires_ms: int | None = None
    addressed_to_bot: bool = True  # False for a group message that explicitly @-mentions others only
    bot_id: str = ""  # which robot the channel delivered this to (DingTalk robotCode)
    org_id: str = ""  # the robot's organisation (DingTalk chatbotCorpId)
    media: tuple[Media, ...] = ()  # pictures and files, in the order they were sent

    @property
    def history_key(self) -> str:
        """Short-term history is kept per conversation and speaker."""
        return f"{self.conversation_id}\x1f{self.person_id}"

    @property
    def group_history_key(self) -> str:
        return f"{self.conversation_id}\x1f*"

    @property
    def arrived_at(self) -> float:
        """When the person sent it (epoch seconds, the channel's clock): what a later "forget" is compared
        with, so a fact said a moment before "/forget all" cannot be stored after it."""
        return self.created_at_ms / 1000 if self.created_at_ms else time.time()


def message_to_json(message: IncomingMessage) -> str:
    """The message as stored in the inbox (and the learning job): every field, media and kind included.
    orjson writes the dataclass directly: 4 µs where `asdict` + `json.dumps` took 63, on every callback."""
    return orjson.dumps(message).decode()


def message_from_json(payload: str) -> IncomingMessage:
    data: dict[str, Any] = json.loads(payload)
    known = {field.name for field in dataclasses.fields(IncomingMessage)}
    fields = {k: v for k, v in data.items() if k in known}  # rows written by another version
    fields["kind"] = ContentKind(fields.get("kind", ContentKind.TEXT))
    fields["media"] = tuple(Media(**item) for item in fields.get("media", ()))
    return IncomingMessage(**fields)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the assistant answers. `markdown` is a hint: the text has structure worth rendering."""

    text: str
    markdown: bool = False
    title: str = ""
    failed: bool = False  # True when the text is an error notice, not a model answer
    canned: bool = False  # a fixed answer (a command, the rate limit), not the model's: kept out of history
    heard: str = ""  # the person's side as the history keeps it, when not their text ("[图片] 这是什么？")
