"""Channel-neutral message types: what the agent receives and what it answers."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ContentKind(enum.StrEnum):
    TEXT = "text"  # plain text, rich text's text parts, or recognised speech
    EMPTY = "empty"  # a mention with nothing after it
    UNSUPPORTED = "unsupported"  # pictures, files, videos, anything the bot cannot read


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

    @property
    def history_key(self) -> str:
        """Short-term history is kept per conversation and speaker."""
        return f"{self.conversation_id}\x1f{self.person_id}"

    @property
    def group_history_key(self) -> str:
        return f"{self.conversation_id}\x1f*"


@dataclass(frozen=True, slots=True)
class Reply:
    """What the assistant answers. `markdown` is a hint: the text has structure worth rendering."""

    text: str
    markdown: bool = False
    title: str = ""
    failed: bool = False  # True when the text is an error notice, not a model answer
    canned: bool = False  # a fixed answer (a command, the rate limit), not the model's: kept out of history
