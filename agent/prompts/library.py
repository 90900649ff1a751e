"""Prompts that follow their files: hot reload and per-group overrides.

The service, `dingbot chat` and the prompt tests read prompts through a PromptLibrary. Before each
message it compares the prompt files' sizes and modification times with what it loaded; when they
differ it loads them again. A file that no longer loads (bad YAML, an unknown variable) is logged once
with the reason, and the last good version stays in use. At startup every file must load.

Group overrides: each `prompts/groups/*.yaml` names the conversations it applies to and changes some of
the defaults for them (see prompts/groups/README.md):

    conversations: ["cidAbC+/x==", ...]  # DingTalk conversationId values, base64: quote them
    system_file: engineering.md          # optional: a system prompt of its own, beside this file
    system_extra: ...                    # optional: appended to the system prompt
    human / chat_place / memories / weekdays: ...    # optional: as in chat.yaml
    replies: {empty: ..., commands: {help_group: ...}}      # optional: merged onto replies.yaml
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.errors import PromptError
from agent.prompts.loader import (
    PromptSet,
    PromptSources,
    build_prompt_set,
    read_sources,
    read_text,
    read_yaml,
)

log = logging.getLogger(__name__)

GROUPS_FOLDER = "groups"
TESTS_FOLDER = "tests"  # prompt regression cases: not prompts, changes there do not reload
_PROMPT_SUFFIXES = (".yaml", ".yml", ".md")
_CHAT_KEYS = frozenset({"human", "chat_place", "memories", "weekdays", "spoken"})
_GROUP_KEYS = _CHAT_KEYS | {"conversations", "name", "system_file", "system_extra", "replies"}

Signature = tuple[tuple[str, int, int, int], ...]  # path, inode, mtime (ns), size


def deep_merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class GroupOverride:
    """One file in prompts/groups/: the conversations it names and the prompts they get."""

    path: Path
    conversations: tuple[str, ...]
    prompts: PromptSet


def _conversation_ids(path: Path, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise PromptError(
            f"{path}: conversations must list the DingTalk conversation ids (conversationId) it applies to"
        )
    ids = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise PromptError(f"{path}: conversations: every id must be a non-empty text (quote it)")
        ids.append(item.strip())
    return tuple(ids)


def load_group(path: Path, defaults: PromptSources) -> GroupOverride:
    """Build one group's prompts: the defaults' documents with the group file's changes laid over."""
    data = read_yaml(path)
    unknown = sorted(set(data) - _GROUP_KEYS)
    if unknown:
        raise PromptError(f"{path}: unknown key(s) {unknown}; a group file may set {sorted(_GROUP_KEYS)}")
    conversations = _conversation_ids(path, data.get("conversations"))
    sources = replace(defaults, chat=deep_merge(defaults.chat, {k: data[k] for k in _CHAT_KEYS & set(data)}))
    sources = replace(sources, chat_path=path)
    system_file = data.get("system_file")
    if system_file is not None:
        if not isinstance(system_file, str) or not system_file.strip():
            raise PromptError(f"{path}: system_file must name a file beside it")
        system_path = path.parent / system_file
        sources = replace(
            sources,
            system_text=read_text(system_path, named_by=f"system_file in {path}"),
            system_path=system_path,
        )
    extra = data.get("system_extra")
    if extra is not None:
        if not isinstance(extra, str) or not extra.strip():
            raise PromptError(f"{path}: system_extra must be a non-empty text")
        sources = replace(
            sources,
            system_text=sources.system_text.rstrip("\n") + "\n\n" + extra.strip("\n") + "\n",
            system_path=path,  # errors in the combined text name the group file
        )
    replies = data.get("replies")
    if replies is not None:
        if not isinstance(replies, Mapping):
            raise PromptError(f"{path}: replies must be a mapping of replies.yaml keys")
        sources = replace(sources, replies=deep_merge(defaults.replies, replies), replies_path=path)
    return GroupOverride(path=path, conversations=conversations, prompts=build_prompt_set(sources))


def _files_in(directory: Path) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_file() and entry.name.endswith(_PROMPT_SUFFIXES):
            yield Path(entry.path)


def prompt_files(folder: Path) -> Iterator[Path]:
    """Every file whose change means a reload: the prompts folder and its groups/, not tests/."""
    yield from _files_in(folder)
    yield from _files_in(folder / GROUPS_FOLDER)


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def quick_signature(folder: Path, known: Signature) -> tuple[tuple[int, int, int] | None, ...]:
    """The stamps of the two folders and of the files seen last time: a file added, removed or renamed
    over changes a folder's; an edit in place changes the file's. A few stat calls, no listing, so
    every message can afford it (the full `signature` lists the folders)."""
    paths = [str(folder), str(folder / GROUPS_FOLDER), *(path for path, *_ in known)]
    return tuple(_stamp(path) for path in paths)


def signature(folder: Path) -> Signature:
    parts = []
    for path in prompt_files(folder):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        parts.append((str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(parts)


@dataclass
class _Loaded:
    sources: PromptSources
    defaults: PromptSet
    groups: dict[Path, GroupOverride] = field(default_factory=dict)
    by_conversation: dict[str, PromptSet] = field(default_factory=dict)


class PromptLibrary:
    """The prompts in use, reloaded when their files change; the defaults or a group's overrides."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.version = 0  # goes up by one on every successful (re)load
        self.problems: list[str] = []  # why files are not in use right now (empty when all loaded)
        self._lock = threading.Lock()
        self._signature: Signature = ()
        self._loaded = self._load(previous=None, strict=True)
        self._signature = signature(folder)
        self._quick = quick_signature(folder, self._signature)
        self.version = 1

    # --- reading -------------------------------------------------------------------------------

    @property
    def defaults(self) -> PromptSet:
        self.refresh()
        return self._loaded.defaults

    def for_conversation(self, conversation_id: str) -> PromptSet:
        """The prompts for one conversation: its group's override, else the defaults."""
        self.refresh()
        loaded = self._loaded
        return loaded.by_conversation.get(conversation_id, loaded.defaults)

    def group_files(self) -> dict[str, tuple[str, ...]]:
        """Each group file in use (path relative to the folder) and the conversations it names."""
        return {
            str(path.relative_to(self.folder)): group.conversations
            for path, group in self._loaded.groups.items()
        }

    # --- reloading -----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Reload when a prompt file changed since the last look. True when something new is in use."""
        with self._lock:
            quick = quick_signature(self.folder, self._signature)
            if quick == self._quick:
                return False
            current = signature(self.folder)
            self._quick = quick_signature(self.folder, current)
            if current == self._signature:
                return False
            self._signature = current
            self._loaded = self._load(previous=self._loaded, strict=False)
            self.version += 1
            if self.problems:
                log.warning(
                    "prompt files changed; %d could not be used, the last good version stays: %s",
                    len(self.problems),
                    " | ".join(self.problems),
                )
            else:
                log.info("prompts reloaded from %s (version %d)", self.folder, self.version)
            return True

    def _load(self, previous: _Loaded | None, *, strict: bool) -> _Loaded:
        problems: list[str] = []
        try:
            sources = read_sources(self.folder)
            loaded = _Loaded(sources=sources, defaults=build_prompt_set(sources))
        except PromptError as exc:
            if strict or previous is None:
                raise
            problems.append(str(exc))
            loaded = _Loaded(sources=previous.sources, defaults=previous.defaults)
        owners: dict[str, Path] = {}
        for path in _files_in(self.folder / GROUPS_FOLDER):
            if path.suffix == ".md":
                continue  # a system_file named by a group file
            try:
                group = load_group(path, loaded.sources)
                for conversation in group.conversations:
                    if conversation in owners:
                        other = owners[conversation].name
                        raise PromptError(f"{path}: conversation {conversation!r} is also in {other}")
            except PromptError as exc:
                if strict:
                    raise
                problems.append(str(exc))
                kept = previous.groups.get(path) if previous else None
                if kept is None or any(c in owners for c in kept.conversations):
                    continue
                group = kept
            loaded.groups[path] = group
            for conversation in group.conversations:
                owners[conversation] = path
                loaded.by_conversation[conversation] = group.prompts
        self.problems = problems
        return loaded
