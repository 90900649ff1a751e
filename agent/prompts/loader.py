"""Load the prompt files in `prompts/` into LangChain templates. No prompt text lives in Python."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from agent.errors import ModelErrorKind, PromptError
from agent.prompts.checks import (
    check_attachments,
    check_media_replies,
    check_reminder_replies,
    check_template,
    check_tools,
    fields,
)

log = logging.getLogger(__name__)

SYSTEM_VARIABLES = frozenset(
    {"bot_name", "now", "timezone", "speaker_nick", "chat_place", "memories", "summary"}
)
HUMAN_VARIABLES = frozenset({"text", "speaker_nick"})
HISTORY_VARIABLE = "history"
DEFAULT_SPOKEN = "[语音] {text}"  # chat.yaml files from before voice was marked
EXTRACTION_VARIABLES = frozenset({"speaker_nick", "existing", "text"})
SUMMARY_VARIABLES = frozenset({"summary", "turns", "limit"})


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: each load is a new version
class PromptSet:
    """Everything loaded from one prompts folder (or the defaults with a group's overrides)."""

    chat: ChatPromptTemplate
    extraction: ChatPromptTemplate  # prompts/memory.yaml: the person's message → {"facts": [...]}
    extraction_repair: str  # said to the model, once, when its extraction was not JSON
    summary: ChatPromptTemplate  # prompts/memory.yaml: summary so far + turns leaving the window → new one
    summary_block: str  # chat.yaml `summary`: how a conversation's summary sits in the system message
    chat_place_direct: str
    chat_place_group: str
    memory_item: str
    memory_empty: str
    weekdays: tuple[str, ...]
    spoken: str  # chat.yaml `spoken`: how a voice message's recognised words are written
    attachments: Mapping[str, str]  # chat.yaml `attachments`: how pictures and files are written
    replies: Mapping[str, Any]
    tools: Mapping[str, Any]  # prompts/tools.yaml: what the model is told of each tool

    def reminder_reply(self, key: str, **values: object) -> str:
        """A sentence of replies.yaml's `reminders` section, e.g. reminder_reply("past", when="…")."""
        return str(self.replies["reminders"][key]).format(**values)

    def tool_result(self, key: str, **values: object) -> str:
        """What the model is given back when a tool did not work (tools.yaml `results`)."""
        return str(self.tools["results"][key]).format(**values)

    def render_now(self, now: datetime) -> str:
        return f"{now:%Y-%m-%d %H:%M} {self.weekdays[now.weekday()]}"

    def render_memories(self, memories: list[str]) -> str:
        if not memories:
            return self.memory_empty
        return "\n".join(self.memory_item.format(memory=m) for m in memories)

    def render_summary(self, summary: str) -> str:
        """The `{summary}` of the system message: the delimited block after a blank line, or nothing when
        there is none (system.md writes it straight after what precedes it)."""
        return "\n\n" + self.summary_block.format(summary=summary) if summary else ""

    def render_chat_place(self, *, is_group: bool, conversation_title: str) -> str:
        if is_group:
            return self.chat_place_group.format(conversation_title=conversation_title or "")
        return self.chat_place_direct

    def reply_template(self, key: str) -> str:
        """The raw template of a reply in replies.yaml, placeholders unfilled."""
        return str(self.replies[key])

    def reply(self, key: str, **values: str) -> str:
        """A user-facing reply from replies.yaml, e.g. reply("empty", bot_name="小钉")."""
        return str(self.replies[key]).format(**values)

    def command_reply(self, key: str, **values: object) -> str:
        return str(self.replies["commands"][key]).format(**values)

    def model_error_reply(self, kind: ModelErrorKind, *, operators_told: bool = False) -> str:
        """The person's notice of a failed answer; "operators were told" only when they were."""
        errors = self.replies["model_errors"]
        text = str(errors.get(kind.value) or errors["unknown"])
        return text + str(self.replies["operators_told"]) if operators_told else text

    def attachment(self, key: str, **values: object) -> str:
        """A template of chat.yaml's `attachments`, e.g. attachment("file", name="周报.pdf")."""
        return self.attachments[key].format(**values)

    def media_reply(self, key: str, **values: object) -> str:
        """A sentence of replies.yaml's `media` section: why a picture or file was not read."""
        return str(self.replies["media"][key]).format(**values)

    def unsupported_reply(self, original_type: str) -> str:
        names = self.replies["type_names"]
        return self.reply("unsupported", type_name=str(names.get(original_type) or names["default"]))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise PromptError(f"{path}: expected a mapping at the top level")
    return data


_REQUIRED_REPLIES: dict[str, frozenset[str]] = {
    "mock_reply": frozenset({"text", "history_turns", "memory_count"}),
    "unsupported": frozenset({"type_name"}),
    "empty": frozenset({"bot_name"}),
    "markdown_title": frozenset(),
    "rate_limited": frozenset({"limit"}),
    "truncated": frozenset({"limit"}),
    "operators_told": frozenset(),
    "answer_truncated": frozenset(),
    "context_too_long": frozenset(),
    "unheard": frozenset(),
    "operator_alert": frozenset({"bot_name", "title", "cause", "fix"}),
    "operator_resolved": frozenset({"bot_name", "title"}),
}


_COMMAND_REPLIES: dict[str, frozenset[str]] = {
    "help_direct": frozenset({"bot_name"}),
    "help_group": frozenset({"bot_name"}),
    "reset": frozenset(),
    "memory_list": frozenset({"count", "items"}),
    "memory_item": frozenset({"number", "text"}),
    "memory_empty": frozenset(),
    "memory_empty_group": frozenset(),
    "memory_unavailable": frozenset(),
    "share_on": frozenset(),
    "share_off": frozenset(),
    "forgot_one": frozenset({"text"}),
    "bad_number": frozenset({"number", "count"}),
    "forgot_all": frozenset({"count"}),
    "forgot_all_group": frozenset(),
    "forgot_history_only": frozenset(),
    "unknown": frozenset(),
    "usage": frozenset(
        {"today", "today_prompt", "today_completion", "month", "month_prompt", "month_completion"}
    ),
    "usage_group": frozenset(),
}


def _check_replies(path: Path, replies: dict[str, Any]) -> None:
    for key, allowed in _REQUIRED_REPLIES.items():
        check_template(replies.get(key), allowed, f"{path}: {key}")
    names = replies.get("type_names")
    if not isinstance(names, dict) or "default" not in names:
        raise PromptError(f"{path}: type_names must be a mapping with a `default` entry")
    errors = replies.get("model_errors")
    if not isinstance(errors, dict):
        raise PromptError(f"{path}: model_errors must be a mapping")
    commands = replies.get("commands")
    if not isinstance(commands, dict):
        raise PromptError(f"{path}: commands must be a mapping")
    for key, allowed in _COMMAND_REPLIES.items():
        check_template(commands.get(key), allowed, f"{path}: commands.{key}")
    missing = [kind.value for kind in ModelErrorKind if kind.value not in errors]
    if missing:
        raise PromptError(f"{path}: model_errors lacks {missing}")
    for key, value in errors.items():
        check_template(value, frozenset(), f"{path}: model_errors.{key}")
    check_reminder_replies(path, replies)
    check_media_replies(path, replies)


# Replies added after a prompts folder may have been copied: taken from the bundled prompts when missing.
_LATER_REPLIES = (
    "operators_told",
    "operator_alert",
    "operator_resolved",
    "answer_truncated",
    "context_too_long",
    "reminders",
    "unheard",
    "media",
)
_LATER_COMMAND_REPLIES = ("memory_empty_group", "usage", "usage_group")
_CLAIM = "已通知"


@functools.cache
def _bundled_replies() -> dict[str, Any]:
    from agent.settings.config import DEFAULT_PROMPTS_DIR

    return read_yaml(DEFAULT_PROMPTS_DIR / "replies.yaml")


@functools.cache
def _bundled_chat() -> dict[str, Any]:
    from agent.settings.config import DEFAULT_PROMPTS_DIR

    return read_yaml(DEFAULT_PROMPTS_DIR / "chat.yaml")


@functools.cache
def _bundled_tools() -> dict[str, Any]:
    from agent.settings.config import DEFAULT_PROMPTS_DIR

    return read_yaml(DEFAULT_PROMPTS_DIR / "tools.yaml")


@functools.cache
def _bundled_memory() -> dict[str, Any]:
    from agent.settings.config import DEFAULT_PROMPTS_DIR

    return read_yaml(DEFAULT_PROMPTS_DIR / "memory.yaml")


def _upgraded(replies: dict[str, Any], path: Path) -> dict[str, Any]:
    """An older replies.yaml keeps working: replies added since come from the bundled prompts, and a
    single `commands.help` (before /help differed between one-to-one and groups) serves both places."""
    upgraded = dict(replies)
    for key in _LATER_REPLIES:
        if key not in upgraded:
            upgraded[key] = _bundled_replies()[key]
    commands = upgraded.get("commands")
    if isinstance(commands, dict):
        later = {key: _bundled_replies()["commands"][key] for key in _LATER_COMMAND_REPLIES}
        old_help = (
            {"help_direct": commands["help"], "help_group": commands["help"]} if "help" in commands else {}
        )
        upgraded["commands"] = later | commands | old_help
    errors = upgraded.get("model_errors")
    for kind, text in errors.items() if isinstance(errors, dict) else ():
        if isinstance(text, str) and _CLAIM in text:
            log.warning(
                "%s: model_errors.%s says %s…, but nobody may have been told: the service adds "
                "`operators_told` only when an alert went out; remove the claim from model_errors.%s",
                path,
                kind,
                _CLAIM,
                kind,
            )
    return upgraded


@dataclass(frozen=True)
class PromptSources:
    """The raw documents one PromptSet is built from, each with the path it came from (for errors)."""

    chat: dict[str, Any]
    chat_path: Path
    system_text: str
    system_path: Path
    replies: dict[str, Any]
    replies_path: Path
    memory: dict[str, Any]
    memory_path: Path
    tools: dict[str, Any]
    tools_path: Path


def read_text(path: Path, named_by: str = "") -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        suffix = f" (named by {named_by})" if named_by else ""
        raise PromptError(f"{path}: file not found{suffix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"{path}: cannot be read ({exc})") from None


def read_sources(folder: Path) -> PromptSources:
    """Read chat.yaml, the system file it names, replies.yaml and memory.yaml from a prompts folder."""
    chat_path = folder / "chat.yaml"
    chat = read_yaml(chat_path)
    system_name = chat.get("system_file")
    if not isinstance(system_name, str):
        raise PromptError(f"{chat_path}: system_file must name a file in {folder}")
    system_path = folder / system_name
    replies_path = folder / "replies.yaml"
    memory_path = folder / "memory.yaml"
    tools_path = folder / "tools.yaml"  # a folder copied before tools existed uses the bundled one
    return PromptSources(
        chat=chat,
        chat_path=chat_path,
        system_text=read_text(system_path, named_by=f"system_file in {chat_path}"),
        system_path=system_path,
        replies=read_yaml(replies_path),
        replies_path=replies_path,
        memory=read_yaml(memory_path),
        memory_path=memory_path,
        tools=read_yaml(tools_path) if tools_path.exists() else _bundled_tools(),
        tools_path=tools_path,
    )


def build_prompt_set(sources: PromptSources) -> PromptSet:
    """Check every template and build the LangChain prompts; raise PromptError naming the bad file."""
    chat_path = sources.chat_path
    chat = sources.chat
    system_text = check_template(sources.system_text, SYSTEM_VARIABLES, str(sources.system_path))
    if "summary" not in fields(system_text):
        log.warning(
            "%s has no {summary}: the conversation's summary of older turns is not shown to the model "
            "(add {summary} after </memories>, as the bundled system.md does, or set SUMMARY_TOKENS=0)",
            sources.system_path,
        )
    human = check_template(chat.get("human"), HUMAN_VARIABLES, f"{chat_path}: human")
    if "text" not in fields(human):
        raise PromptError(f"{chat_path}: human must contain {{text}}")

    place = chat.get("chat_place") or {}
    memories = chat.get("memories") or {}
    if not isinstance(place, dict) or not isinstance(memories, dict):
        raise PromptError(f"{chat_path}: chat_place and memories must be mappings")
    direct = check_template(place.get("direct"), frozenset(), f"{chat_path}: chat_place.direct")
    group = check_template(
        place.get("group"), frozenset({"conversation_title"}), f"{chat_path}: chat_place.group"
    )
    item = check_template(memories.get("item"), frozenset({"memory"}), f"{chat_path}: memories.item")
    empty = check_template(memories.get("empty"), frozenset(), f"{chat_path}: memories.empty")

    spoken = check_template(chat.get("spoken", DEFAULT_SPOKEN), frozenset({"text"}), f"{chat_path}: spoken")
    if "text" not in fields(spoken):
        raise PromptError(f"{chat_path}: spoken must contain {{text}}")
    attachments = check_attachments(chat_path, chat.get("attachments") or _bundled_chat()["attachments"])
    weekdays = chat.get("weekdays")
    if not isinstance(weekdays, list) or len(weekdays) != 7 or not all(isinstance(w, str) for w in weekdays):
        raise PromptError(f"{chat_path}: weekdays must list 7 names, Monday first")

    replies = _upgraded(sources.replies, sources.replies_path)
    _check_replies(sources.replies_path, replies)
    check_tools(sources.tools_path, sources.tools)

    memory_path = sources.memory_path
    memory = sources.memory
    extraction = ChatPromptTemplate.from_messages(
        [
            (
                "system",
                check_template(
                    memory.get("extraction_system"), EXTRACTION_VARIABLES, f"{memory_path}: extraction_system"
                ),
            ),
            (
                "human",
                check_template(
                    memory.get("extraction_human"), EXTRACTION_VARIABLES, f"{memory_path}: extraction_human"
                ),
            ),
        ]
    )

    template = ChatPromptTemplate.from_messages(
        [
            ("system", system_text),
            MessagesPlaceholder(HISTORY_VARIABLE, optional=True),
            ("human", human),
        ]
    )
    repair = memory.get("extraction_repair") or _bundled_memory().get("extraction_repair")
    summary_source = memory if "summary_system" in memory else _bundled_memory()  # files from before it
    summary = ChatPromptTemplate.from_messages(
        [
            (role, check_template(summary_source.get(key), SUMMARY_VARIABLES, f"{memory_path}: {key}"))
            for role, key in (("system", "summary_system"), ("human", "summary_human"))
        ]
    )
    block = check_template(
        chat.get("summary") or _bundled_chat()["summary"], frozenset({"summary"}), f"{chat_path}: summary"
    )
    if "summary" not in fields(block):
        raise PromptError(f"{chat_path}: summary must contain {{summary}}")
    return PromptSet(
        chat=template,
        extraction=extraction,
        extraction_repair=check_template(repair, frozenset(), f"{memory_path}: extraction_repair"),
        summary=summary,
        summary_block=block,
        chat_place_direct=direct,
        chat_place_group=group,
        memory_item=item,
        memory_empty=empty,
        weekdays=tuple(weekdays),
        spoken=spoken,
        attachments=attachments,
        replies=replies,
        tools=sources.tools,
    )


def load_prompts(folder: Path) -> PromptSet:
    """Read and check the default prompts of a folder (no group overrides, no reloading)."""
    return build_prompt_set(read_sources(folder))
