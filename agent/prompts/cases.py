"""Prompt regression cases: `prompts/tests/*.yaml`, run through the real assistant with scripted replies.

A case gives the conversation so far, the memories recalled, the person's message and the model's
scripted replies; it says what must (or must not) appear in the prompt the model received and in the
reply the person gets. The assistant, prompts, history (SQLite) and reply handling are the service's own;
only the model is scripted (RecordingChatModel) and the memories are given instead of recalled.
`dingbot prompts test` and the pytest suite both run them. See prompts/tests/README.md.
"""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from langchain_core.messages import BaseMessage

from agent.assembly import open_agent
from agent.errors import PromptError
from agent.memory.history import Turn
from agent.messages import ContentKind, IncomingMessage
from agent.model.scripted import RecordingChatModel, render
from agent.prompts.library import PromptLibrary
from agent.settings.config import Settings

CASES_FOLDER = "tests"
SNAPSHOTS_FOLDER = "snapshots"
DEFAULT_NOW = "2026-11-23 18:05"  # a Monday
_CASE_KEYS = frozenset(
    {"name", "message", "speaker", "group", "conversation_id", "history", "memories", "model_replies"}
    | {"now", "settings", "expect", "snapshot"}
)
_EXPECT_KEYS = frozenset(
    {"prompt_contains", "prompt_excludes", "reply_contains", "reply_excludes", "reply_equals", "model_called"}
)
_SETTING_KEYS = frozenset(
    {"bot_name", "bot_timezone", "history_turns", "group_shared_context", "max_message_chars"}
)


class CaseFileError(PromptError):
    """A case file that cannot be read; the message names the file and the case."""


@dataclass(frozen=True)
class PromptCase:
    file: Path
    name: str
    message: str
    speaker: str = "张三"
    group: str | None = None  # the group's title: a group conversation; None: one-to-one
    conversation_id: str | None = None  # to exercise a prompts/groups/ override
    history: tuple[tuple[str, str], ...] = ()
    memories: tuple[str, ...] = ()
    model_replies: tuple[str, ...] = ("好的。",)
    now: str = DEFAULT_NOW
    settings: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)
    snapshot: str | None = None

    @property
    def title(self) -> str:
        return f"{self.file.name} › {self.name}"


@dataclass
class CaseResult:
    case: PromptCase
    failures: list[str]
    prompt: str = ""  # the messages the model received ("" when it was not called)
    reply: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures

    def report(self) -> str:
        """What went wrong, readably: each failed expectation, diffs, and the prompt for context."""
        lines = [f"✗ {self.case.title}"]
        lines += [f"  {line}" for failure in self.failures for line in failure.splitlines()]
        if self.prompt and any(f.startswith("prompt") for f in self.failures):
            lines.append("  the prompt the model received:")
            lines += [f"  {n:4} | {line}" for n, line in enumerate(self.prompt.splitlines(), 1)]
        if self.reply and any(f.startswith("reply") for f in self.failures):
            lines.append("  the reply:")
            lines += [f"       | {line}" for line in self.reply.splitlines()]
        return "\n".join(lines)


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CaseFileError(f"{where}: must be a text or a list of texts")
    return tuple(value)


def _case(path: Path, index: int, data: Any) -> PromptCase:
    where = f"{path}: case {index + 1}"
    if not isinstance(data, dict):
        raise CaseFileError(f"{where}: must be a mapping")
    name = str(data.get("name") or f"case {index + 1}")
    where = f"{path}: {name}"
    unknown = sorted(set(data) - _CASE_KEYS)
    if unknown:
        raise CaseFileError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_CASE_KEYS)}")
    if not isinstance(data.get("message"), str):
        raise CaseFileError(f"{where}: `message` (what the person says) is required")
    expect = data.get("expect") or {}
    settings = data.get("settings") or {}
    if not isinstance(expect, dict) or set(expect) - _EXPECT_KEYS:
        raise CaseFileError(f"{where}: expect may hold {sorted(_EXPECT_KEYS)}")
    if not isinstance(settings, dict) or set(settings) - _SETTING_KEYS:
        raise CaseFileError(f"{where}: settings may hold {sorted(_SETTING_KEYS)}")
    history = []
    for turn in data.get("history") or []:
        if not isinstance(turn, dict) or not isinstance(turn.get("human"), str) or "ai" not in turn:
            raise CaseFileError(f"{where}: each history turn is {{human: ..., ai: ...}}")
        history.append((turn["human"], str(turn["ai"])))
    replies = _texts(data.get("model_replies"), f"{where}: model_replies") or ("好的。",)
    return PromptCase(
        file=path,
        name=name,
        message=data["message"],
        speaker=str(data.get("speaker") or "张三"),
        group=None if data.get("group") is None else str(data["group"]),
        conversation_id=data.get("conversation_id"),
        history=tuple(history),
        memories=_texts(data.get("memories"), f"{where}: memories"),
        model_replies=replies,
        now=str(data.get("now") or DEFAULT_NOW),
        settings=settings,
        expect=expect,
        snapshot=data.get("snapshot"),
    )


def load_cases(prompts_folder: Path) -> list[PromptCase]:
    """Every case in prompts/tests/*.yaml, in file order. Raises CaseFileError naming a bad file."""
    cases = []
    for path in sorted((prompts_folder / CASES_FOLDER).glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise CaseFileError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            raise CaseFileError(f"{path}: expected `cases:` with a list of cases")
        cases += [_case(path, i, item) for i, item in enumerate(data["cases"])]
    return cases


def _message(case: PromptCase) -> IncomingMessage:
    is_group = case.group is not None
    default_id = "cidPromptCaseGroup==" if is_group else "cidPromptCaseDirect=="
    return IncomingMessage(
        message_id="prompt-case",
        conversation_id=case.conversation_id or default_id,
        is_group=is_group,
        person_id="case:zhangsan",
        sender_id="$:prompt-case",
        sender_staff_id="prompt-case",
        sender_nick=case.speaker,
        text=case.message,
        kind=ContentKind.TEXT if case.message.strip() else ContentKind.EMPTY,
        conversation_title=case.group or "",
    )


def _settings(case: PromptCase, prompts_folder: Path, database: Path) -> Settings:
    """Fixed values, not the environment's: a case renders the same on every machine."""
    values: dict[str, Any] = {
        "force_mock_openai": True,
        "prompts_dir": prompts_folder,
        "database_path": database,
        "database_url": None,  # never the environment's DATABASE_URL: a case keeps nothing anywhere real
        "rate_limit_per_minute": 0,
        "bot_name": "小钉",
        "bot_timezone": "Asia/Shanghai",
        "history_turns": 10,
        "group_shared_context": False,
        "max_message_chars": 4000,
    }
    values.update(case.settings)
    return Settings(_env_file=None, **values)


def _check(case: PromptCase, prompt: str, reply: str, called: bool) -> list[str]:
    expect = case.expect
    failures = []
    for text in _texts(expect.get("prompt_contains"), "prompt_contains"):
        if text not in prompt:
            failures.append(f"prompt should contain: {text}")
    for text in _texts(expect.get("prompt_excludes"), "prompt_excludes"):
        if text in prompt:
            failures.append(f"prompt should not contain: {text}")
    for text in _texts(expect.get("reply_contains"), "reply_contains"):
        if text not in reply:
            failures.append(f"reply should contain: {text}")
    for text in _texts(expect.get("reply_excludes"), "reply_excludes"):
        if text in reply:
            failures.append(f"reply should not contain: {text}")
    if "reply_equals" in expect and reply != str(expect["reply_equals"]):
        failures.append("reply differs:\n" + unified(str(expect["reply_equals"]), reply, "expected", "reply"))
    if "model_called" in expect and bool(expect["model_called"]) != called:
        failures.append(f"model should {'' if expect['model_called'] else 'not '}have been called")
    return failures


def unified(expected: str, actual: str, expected_name: str, actual_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            expected.splitlines(True), actual.splitlines(True), expected_name, actual_name, lineterm="\n"
        )
    ).rstrip("\n")


async def rendered(
    case: PromptCase, settings: Settings, now: datetime, *, prompts: PromptLibrary | None = None
) -> tuple[list[BaseMessage], str]:
    """What the model received for the case's message (empty: it was not called) and the person's reply,
    through the real assistant with `settings` (its database is the one they name: a scratch one)."""
    model = RecordingChatModel(responses=list(case.model_replies))
    message = _message(case)
    async with open_agent(settings, memory=False, prompts=prompts, model=model, clock=lambda: now) as agent:
        scope = agent.assistant.history_scope(message)
        for human, ai in case.history:
            await agent.history.append(scope, Turn(human, ai), message.person_id, said_at=0.0)
        reply = await agent.assistant.reply(message, recalled=list(case.memories))
    return (model.prompts[-1] if model.prompts else []), reply.text


async def run_case(
    case: PromptCase, prompts_folder: Path, work_dir: Path, *, update_snapshots: bool = False
) -> CaseResult:
    """Run one case through the real assistant; never raises for what the case finds."""
    settings = _settings(case, prompts_folder, work_dir / "history.db")
    try:
        now = datetime.strptime(case.now, "%Y-%m-%d %H:%M").replace(tzinfo=settings.timezone)
    except ValueError:
        return CaseResult(case, [f"now: {case.now!r} is not YYYY-MM-DD HH:MM"])
    messages, reply_text = await rendered(case, settings, now)
    prompt = render(messages) if messages else ""
    failures = _check(case, prompt, reply_text, bool(messages))
    if case.snapshot:
        path = prompts_folder / CASES_FOLDER / SNAPSHOTS_FOLDER / f"{case.snapshot}.txt"
        if update_snapshots:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(prompt, encoding="utf-8")
        elif not path.is_file():
            failures.append(f"snapshot {path.name} is missing: `dingbot prompts test --update` writes it")
        elif (expected := path.read_text(encoding="utf-8")) != prompt:
            relative = f"{CASES_FOLDER}/{SNAPSHOTS_FOLDER}/{path.name}"
            failures.append(
                f"prompt differs from {relative} (`dingbot prompts test --update` accepts the change):\n"
                + unified(expected, prompt, f"{relative} (accepted)", "prompt now")
            )
    return CaseResult(case, failures, prompt, reply_text)


async def run_cases(
    prompts_folder: Path, cases: Iterable[PromptCase], *, update_snapshots: bool = False
) -> list[CaseResult]:
    """Run cases against a prompts folder. Prompts that do not load raise PromptError (with the reason)."""
    PromptLibrary(prompts_folder)  # every prompt file, group overrides too, must load first
    results = []
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="dingbot-prompt-case-") as work:
            result = await run_case(case, prompts_folder, Path(work), update_snapshots=update_snapshots)
        results.append(result)
    return results
