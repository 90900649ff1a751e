"""The prompt playground: the exact prompt the service would send for a sample message (its settings, its
prompts with group overrides, the given history and memories), rendered by the real assistant on a scratch
database, and the prompt files checked before an edit is written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from langchain_core.messages import BaseMessage

from agent.errors import PromptError
from agent.model.scripted import render
from agent.prompts.cases import PromptCase, rendered
from agent.prompts.library import GROUPS_FOLDER, PromptLibrary, prompt_files
from agent.settings.config import Settings

SCRIPTED_ANSWER = "（试用台：这里是模型的回答 · the model's answer goes here）"
HISTORY_SEPARATOR = "=>"  # a history line is "what the person said => what the bot answered"


@dataclass(frozen=True)
class Sample:
    """A message to render the prompt for."""

    message: str
    speaker: str = "张三"
    group: str = ""  # a group's title: the message comes from a group
    conversation_id: str = ""  # a conversation a prompts/groups/ file names: its override applies
    history: tuple[tuple[str, str], ...] = ()
    memories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rendered:
    messages: list[BaseMessage]  # what the model would receive (empty: a command or canned reply)
    text: str  # the same, readable
    reply: str  # what the person would get, with the model's answer scripted as SCRIPTED_ANSWER


def parse_history(text: str) -> tuple[tuple[str, str], ...]:
    """History lines "问 => 答" (one turn a line); raises PromptError naming a line without the arrow."""
    turns = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        human, arrow, ai = line.partition(HISTORY_SEPARATOR)
        if not arrow or not human.strip():
            raise PromptError(
                f"history line {number}: write it as 'what they said {HISTORY_SEPARATOR} answer'"
            )
        turns.append((human.strip(), ai.strip()))
    return tuple(turns)


async def render_sample(
    settings: Settings, library: PromptLibrary, sample: Sample, now: datetime
) -> Rendered:
    """The prompt for `sample` as the service with `settings` and `library` would build it at `now`."""
    case = PromptCase(
        file=Path("playground"),
        name="playground",
        message=sample.message,
        speaker=sample.speaker or "张三",
        group=sample.group or None,
        conversation_id=sample.conversation_id or None,
        history=sample.history,
        memories=sample.memories,
        model_replies=(SCRIPTED_ANSWER,),
    )
    with tempfile.TemporaryDirectory(prefix="dingbot-playground-") as work:
        scratch = settings.model_copy(
            update={
                "database_url": None,  # never the service's own database: nothing is kept
                "database_path": Path(work) / "playground.db",
                "rate_limit_per_minute": 0,
            }
        )
        messages, reply = await rendered(case, scratch, now, prompts=library)
    return Rendered(messages, render(messages) if messages else "", reply)


def editable_files(folder: Path) -> dict[str, Path]:
    """The prompt files an editor may change, by their name relative to the folder (groups/x.yaml)."""
    return {path.relative_to(folder).as_posix(): path for path in prompt_files(folder)}


def check_edit(folder: Path, name: str, text: str) -> None:
    """Load every prompt file with `name` holding `text` instead, in a scratch copy: raises PromptError
    with the loader's own message (naming the real file) when the edit would not load."""
    with tempfile.TemporaryDirectory(prefix="dingbot-prompt-edit-") as work:
        copy = Path(work) / "prompts"
        copy.mkdir()
        for relative, path in editable_files(folder).items():
            target = copy / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        (copy / GROUPS_FOLDER).mkdir(exist_ok=True)
        (copy / name).write_text(text, encoding="utf-8")
        try:
            PromptLibrary(copy)
        except PromptError as exc:
            raise PromptError(str(exc).replace(str(copy), str(folder))) from None


def write_prompt(path: Path, text: str) -> None:
    """Replace a prompt file whole (a reader never sees half of it): a temporary file of its own beside it,
    then a rename."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".saving", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        if path.exists():
            shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
