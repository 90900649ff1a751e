"""The tools one answer may use — the speaker's reminder tools and the operator's MCP tools — and calling
one safely: a timeout, a size cap, a failure turned into a short result the model can explain, one INFO
line and a metric per call (the tool's name and outcome, never its arguments)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from langchain_core.messages import ToolCall, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field, create_model

from agent.messages import IncomingMessage
from agent.observe import NoObserver, Observer
from agent.prompts.loader import PromptSet
from agent.settings.config import Settings
from agent.storage.health import StorageError
from agent.tools.reminders import Firing, Plan, Reminder, ReminderBook
from agent.tools.when import ReminderProblem

log = logging.getLogger(__name__)
MAX_CALLS_PER_ROUND = 8


@dataclass(frozen=True, slots=True)
class RouteProblem:
    """Why a reminder could not reach the person at its due time. `why` names replies.yaml's
    `reminders.unreachable_why.<why>`; `settings` what an administrator must add ("" when nothing would
    help, and then `before` is the last time a reminder can still be delivered)."""

    why: str
    settings: str = ""
    before: float | None = None


class Reachability(Protocol):
    """The channel's answer to "will a message reach this person at `due_at`?" (api/ implements it)."""

    def problem(self, message: IncomingMessage, due_at: float, repeats: bool) -> RouteProblem | None: ...


class McpTools(Protocol):
    """The operator's MCP servers' tools (agent/tools/mcp.py)."""

    def tools_for(self, message: IncomingMessage) -> list[BaseTool]: ...

    def timeout_for(self, tool: str) -> float | None: ...

    def call_failed(self, tool: str, error: BaseException) -> None: ...


class ToolWatcher(Protocol):
    """Who shows tool calls as they happen (`dingbot chat`, an AI card's status line)."""

    async def tool_started(self, name: str, args: dict[str, Any], status: str) -> None: ...

    async def tool_finished(self, name: str, outcome: str) -> None: ...


def when_text(prompts: PromptSet, reminder: Reminder) -> str:
    return prompts.render_now(reminder.due_local())


class Toolbox:
    def __init__(
        self,
        settings: Settings,
        *,
        reminders: ReminderBook | None = None,
        reachability: Reachability | None = None,
        mcp: McpTools | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.reminders = reminders
        self.reachability = reachability
        self.mcp = mcp
        self.observer: Observer = observer or NoObserver()

    def for_message(self, message: IncomingMessage, prompts: PromptSet) -> list[BaseTool]:
        """The tools this answer may use: the reminder tools bound to its speaker (nobody can name another
        person), and the MCP tools allowed where the message was sent."""
        if self.settings.agent_max_steps == 0:
            return []
        tools: list[BaseTool] = []
        if self.reminders is not None:
            tools.extend(self._reminder_tools(message, prompts))
        if self.mcp is not None:
            names = {tool.name for tool in tools}
            tools.extend(t for t in self.mcp.tools_for(message) if t.name not in names)
        return tools

    def status_line(self, name: str, prompts: PromptSet) -> str:
        spec = prompts.tools.get(name)
        if isinstance(spec, dict) and "status" in spec:
            return str(spec["status"])
        return str(prompts.tools["mcp_status"]).format(tool=name)

    async def call(
        self,
        call: ToolCall,
        tools: dict[str, BaseTool],
        prompts: PromptSet,
        watcher: ToolWatcher | None = None,
    ) -> ToolMessage:
        """Run one tool call; whatever happens, a ToolMessage the model can read."""
        name, call_id = call["name"], call.get("id") or ""
        tool = tools.get(name)
        started = time.perf_counter()
        if watcher is not None:
            await watcher.tool_started(name, dict(call.get("args") or {}), self.status_line(name, prompts))
        outcome, content = await self._run(tool, call, prompts)
        seconds = time.perf_counter() - started
        self.observer.tool_call(name if tool is not None else "unknown", outcome, seconds)
        log.info("tool %s: %s in %.0f ms", name if tool is not None else "(unknown)", outcome, seconds * 1000)
        if watcher is not None:
            await watcher.tool_finished(name, outcome)
        return ToolMessage(content=content, tool_call_id=call_id, name=name, status=_status(outcome))

    async def _run(self, tool: BaseTool | None, call: ToolCall, prompts: PromptSet) -> tuple[str, str]:
        name = call["name"]
        if tool is None:
            return "unknown", prompts.tool_result("unknown", tool=name[:80])
        mcp_timeout = self.mcp.timeout_for(name) if self.mcp is not None else None
        seconds = mcp_timeout or self.settings.tool_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                result = await tool.ainvoke(dict(call.get("args") or {}))
        except TimeoutError:
            return "timeout", prompts.tool_result("timeout", tool=name, seconds=f"{seconds:g}")
        except Refused as refusal:
            return "refused", str(refusal)
        except Exception as exc:
            log.debug("tool %s failure detail", name, exc_info=True)
            if mcp_timeout is not None and self.mcp is not None:
                self.mcp.call_failed(name, exc)
            return "error", prompts.tool_result("failed", tool=name, reason=_reason(exc))
        text = _as_text(result)
        limit = self.settings.tool_result_max_chars
        if len(text) > limit:
            text = text[:limit] + "\n" + prompts.tool_result("cut", limit=limit)
        if mcp_timeout is not None:  # an MCP server's answer is data from outside: marked as such
            start, end = (
                prompts.tool_result("untrusted_start", tool=name),
                prompts.tool_result("untrusted_end"),
            )
            text = text.replace(end, end.replace("<", "‹"))  # it cannot close the block early
            text = f"{start}\n{text}\n{end}"
        return "ok", text

    def _reminder_tools(self, message: IncomingMessage, prompts: PromptSet) -> list[BaseTool]:
        book = self.reminders
        assert book is not None
        spec = prompts.tools

        # Each call is named by the message and its place among this answer's calls of the tool: the
        # message answered again (after a crash) sets and cancels nothing twice.
        sets, cancels = itertools.count(1), itertools.count(1)

        async def set_reminder(when: str, text: str, repeat: str | None = None) -> str:
            source = f"{message.message_id}:set:{next(sets)}"
            return await self._set(book, message, prompts, when, text, repeat, source)

        async def list_reminders() -> str:
            return await self._list(book, message, prompts)

        async def cancel_reminder(id: int) -> str:
            source = f"{message.message_id}:cancel:{next(cancels)}"
            cancelled = await book.cancel(message, id, source=source)  # numbered as list_reminders shows
            if cancelled is None:
                raise Refused(prompts.reminder_reply("not_found"))
            return prompts.reminder_reply(
                "cancelled", when=when_text(prompts, cancelled), text=cancelled.text
            )

        return [
            _tool(set_reminder, spec, {"when": str, "text": str, "repeat": (str | None, None)}),
            _tool(list_reminders, spec, {}),
            _tool(cancel_reminder, spec, {"id": int}),
        ]

    async def _set(
        self,
        book: ReminderBook,
        message: IncomingMessage,
        prompts: PromptSet,
        when: str,
        text: str,
        repeat: str | None,
        source: str,
    ) -> str:
        try:
            plan = book.plan(when, text, repeat)
            problem = self._unreachable(message, plan, prompts)
            if problem is not None:
                raise Refused(problem)
            reminder = await book.add(message, plan, source=source)
        except ReminderProblem as exc:
            raise Refused(prompts.reminder_reply(exc.key, **exc.values)) from None
        except StorageError:
            raise Refused(prompts.reminder_reply("unavailable")) from None
        return confirmation(prompts, reminder)

    def _unreachable(self, message: IncomingMessage, plan: Plan, prompts: PromptSet) -> str | None:
        if self.reachability is None:
            return None
        problem = self.reachability.problem(message, plan.due.timestamp(), plan.repeat is not None)
        if problem is None:
            return None
        why = str(prompts.replies["reminders"]["unreachable_why"].get(problem.why, problem.why))
        log.warning("reminder not set: it could not be delivered at its due time (%s)", problem.why)
        if problem.settings:
            return prompts.reminder_reply("unreachable", why=why, settings=problem.settings)
        before = problem.before or time.time()
        return prompts.reminder_reply(
            "unreachable_before", why=why, before=prompts.render_now(_local(before, plan))
        )

    async def _list(self, book: ReminderBook, message: IncomingMessage, prompts: PromptSet) -> str:
        pending = await book.visible(message)
        if not pending:
            return prompts.reminder_reply("empty")
        lines = [reminder_line(prompts, r, number=n) for n, r in enumerate(pending, 1)]
        return prompts.reminder_reply("list", count=len(pending), items="\n".join(lines))


class Refused(Exception):
    """A tool's own "no" (a past time, not yours, no route): its sentence is the result, the outcome
    `refused`, not an error."""


def confirmation(prompts: PromptSet, reminder: Reminder) -> str:
    when = when_text(prompts, reminder)
    if reminder.repeat is None:
        return prompts.reminder_reply("set", when=when, text=reminder.text)
    repeat = prompts.replies["reminders"]["repeat_names"].get(reminder.repeat.value, reminder.repeat.value)
    return prompts.reminder_reply("set_repeat", when=when, text=reminder.text, repeat=repeat)


LATE_NOTE_SECONDS = 60.0  # later than this after its due time, a reminder says how late it is


def fired_text(prompts: PromptSet, firing: Firing) -> str:
    """The reminder itself, with a note saying how late when the service was down at its due time."""
    text = prompts.reminder_reply("fired", text=firing.reminder.text)
    if firing.late_seconds > LATE_NOTE_SECONDS:
        due = prompts.render_now(firing.reminder.due_local())
        late = prompts.reminder_reply("minutes", n=math.ceil(firing.late_seconds / 60))
        text += "\n" + prompts.reminder_reply("late", due=due, late=late)
    return text


def reminder_line(prompts: PromptSet, reminder: Reminder, *, number: int) -> str:
    names = prompts.replies["reminders"]["repeat_names"]
    repeat = f"（{names.get(reminder.repeat.value)}）" if reminder.repeat else ""
    return prompts.reminder_reply(
        "item", number=number, when=when_text(prompts, reminder), repeat=repeat, text=reminder.text
    )


def _local(epoch: float, plan: Plan) -> datetime:
    return datetime.fromtimestamp(epoch, plan.due.tzinfo)


@functools.cache
def _schema(name: str, fields: tuple[tuple[str, Any, Any, str], ...]) -> type[BaseModel]:
    """The arguments' model, made once per tool and set of descriptions (not on every message)."""
    definitions: dict[str, Any] = {
        field: (kind, Field(default, description=text)) for field, kind, default, text in fields
    }
    schema: type[BaseModel] = create_model(f"{name}_args", **definitions)
    return schema


def _tool(function: Callable[..., Awaitable[str]], spec: Any, fields: dict[str, Any]) -> BaseTool:
    """A LangChain tool whose description and argument descriptions come from prompts/tools.yaml."""
    name = function.__name__
    described = spec[name]
    args = described.get("args") or {}
    shape = tuple(
        (field, *(kind if isinstance(kind, tuple) else (kind, ...)), str(args.get(field, "")))
        for field, kind in fields.items()
    )
    return StructuredTool(
        name=name,
        description=str(described["description"]),
        args_schema=_schema(name, shape),
        coroutine=function,
    )


def _as_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, list):  # MCP content blocks
        return "\n".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in result
        )
    if isinstance(result, ToolMessage):
        return _as_text(result.content)
    return str(result)


def _reason(exc: BaseException) -> str:
    """A short, safe reason: the exception's class and the first line of its message, capped."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def _status(outcome: str) -> Any:
    return "success" if outcome in ("ok", "refused") else "error"
