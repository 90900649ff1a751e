"""Commands the person types, answered without the model (names in Chinese and English).

/help /帮助 · /reset /重置 · /memory /记忆 · /memory share on|off (/记忆 共享 开|关)
/forget N (/忘记 N) · /forget all (/忘记 全部) · /reminders (/提醒) · /reminders cancel N (/提醒 取消 N)
/usage (/用量)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from agent.memory.history import HistoryStore
from agent.memory.service import MemoryService, MemoryUnavailable
from agent.messages import IncomingMessage, Reply
from agent.model.usage import UsageBook
from agent.prompts.loader import PromptSet
from agent.tools.reminders import ReminderBook
from agent.tools.toolbox import reminder_line, when_text

_NAMES = {
    "help": "help", "帮助": "help", "?": "help", "？": "help",
    "reset": "reset", "重置": "reset", "清空": "reset",
    "memory": "memory", "记忆": "memory", "memories": "memory",
    "forget": "forget", "忘记": "forget", "忘掉": "forget",
    "reminders": "reminders", "reminder": "reminders", "提醒": "reminders", "提醒列表": "reminders",
    "usage": "usage", "用量": "usage", "token": "usage", "tokens": "usage",
}  # fmt: skip
log = logging.getLogger(__name__)

_ON = {"on", "开", "打开", "开启", "是"}
_OFF = {"off", "关", "关闭", "否"}
_SHARE = {"share", "共享", "分享"}
_ALL = {"all", "全部", "所有", "一切"}
_CANCEL = {"cancel", "取消", "删除", "delete"}
_COMMAND = re.compile(r"^[/／]\s*(\S+)\s*(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # help, reset, memory, forget, or unknown
    args: tuple[str, ...]


def parse_command(text: str) -> Command | None:
    """A command when the text starts with "/" (or the full-width "／"); None for ordinary messages."""
    match = _COMMAND.match(text.strip())
    if not match:
        return None
    word = match.group(1).lower()
    name = _NAMES.get(word)
    rest = match.group(2)
    if name is None:  # "/忘记全部" written without a space
        for known, canonical in _NAMES.items():
            if word.startswith(known) and len(known) > 1:
                name, rest = canonical, word[len(known) :] + " " + rest
                break
    return Command(name or "unknown", tuple(rest.lower().split()))


class CommandRunner:
    def __init__(
        self,
        *,
        prompts: PromptSet,
        history: HistoryStore,
        memory: MemoryService | None,
        bot_name: str,
        reminders: ReminderBook | None = None,
        usage: UsageBook | None = None,
    ):
        self.reminders = reminders
        self.usage = usage
        self.prompts = prompts
        self.history = history
        self.memory = memory
        self.bot_name = bot_name

    def _say(self, key: str, **values: object) -> Reply:
        return Reply(self.prompts.command_reply(key, **values), canned=True)

    async def run(self, command: Command, message: IncomingMessage, history_scope: str) -> Reply:
        if command.name == "help":
            return self._say("help_group" if message.is_group else "help_direct", bot_name=self.bot_name)
        if command.name == "reset":
            await self.history.clear(history_scope)
            return self._say("reset")
        if command.name == "unknown":
            return self._say("unknown")
        if command.name == "reminders":
            return await self._reminders(command.args, message)
        if command.name == "usage":
            return await self._usage(message)
        if command.name == "forget" and command.args and command.args[0] in _ALL:
            return await self._forget_all(message)
        if self.memory is None:
            return self._say("memory_unavailable")
        try:
            if command.name == "memory":
                return await self._memory(command.args, message)
            return await self._forget(command.args, message)
        except MemoryUnavailable:
            return self._say("memory_unavailable")
        except Exception as exc:  # a store error gets the person an answer, never silence
            log.warning("command /%s failed (%s)", command.name, type(exc).__name__)
            return self._say("memory_unavailable")

    async def _forget_all(self, message: IncomingMessage) -> Reply:
        count = await forget_everything(self.history, self.memory, message.person_id, message.arrived_at)
        if count is None:
            return self._say("forgot_history_only")
        return self._say("forgot_all_group") if message.is_group else self._say("forgot_all", count=count)

    async def _memory(self, args: tuple[str, ...], message: IncomingMessage) -> Reply:
        assert self.memory is not None
        if args and args[0] in _SHARE:
            switch = args[1] if len(args) > 1 else ""
            if switch in _ON or switch in _OFF:
                await self.memory.set_shared(message.person_id, switch in _ON)
                return self._say("share_on" if switch in _ON else "share_off")
            return self._say("unknown")
        visible = await self.memory.list_memories(message)
        if not visible:
            return self._say("memory_empty_group" if message.is_group else "memory_empty")
        items = "\n".join(
            self.prompts.command_reply("memory_item", number=n, text=text)
            for n, (_, text) in enumerate(visible, 1)
        )
        return self._say("memory_list", count=len(visible), items=items)

    async def _forget(self, args: tuple[str, ...], message: IncomingMessage) -> Reply:
        assert self.memory is not None
        if not args or not args[0].isdigit():
            return self._say("unknown")
        number = int(args[0])
        text = await self.memory.forget(message, number)
        if text is None:
            count = len(await self.memory.list_memories(message))
            return self._say("bad_number", number=number, count=count)
        return self._say("forgot_one", text=text)

    async def _reminders(self, args: tuple[str, ...], message: IncomingMessage) -> Reply:
        """/reminders lists the speaker's pending reminders, numbered; /reminders cancel N cancels one."""
        say = self.prompts.reminder_reply
        if self.reminders is None:
            return Reply(say("unavailable"), canned=True)
        pending = await self.reminders.visible(message)
        if args and args[0] in _CANCEL:
            if len(args) < 2 or not args[1].isdigit():
                return self._say("unknown")
            number = int(args[1])
            # named by the message: answered again after a crash, it cancels nothing more
            cancelled = await self.reminders.cancel(message, number, source=f"{message.message_id}:cancel")
            if cancelled is None:
                if not 1 <= number <= len(pending):
                    return Reply(say("bad_number", number=number, count=len(pending)), canned=True)
                return Reply(say("not_found"), canned=True)  # fired or cancelled meanwhile
            return Reply(
                say("cancelled", when=when_text(self.prompts, cancelled), text=cancelled.text), canned=True
            )
        if args:
            return self._say("unknown")
        if not pending:
            return Reply(say("empty"), canned=True)
        lines = [reminder_line(self.prompts, r, number=n) for n, r in enumerate(pending, 1)]
        return Reply(say("list", count=len(pending), items="\n".join(lines)), canned=True)

    async def _usage(self, message: IncomingMessage) -> Reply:
        """/usage: the tokens the person's messages cost today and this month (BOT_TIMEZONE days)."""
        if message.is_group:  # how much someone uses the bot is theirs to see, not the group's
            return self._say("usage_group")
        if self.usage is None:
            return self._say("usage", **dict.fromkeys(_USAGE_FIELDS, "0"))
        today, month = await self.usage.of(message.person_id)
        return self._say(
            "usage",
            today=f"{today.total:,}",
            today_prompt=f"{today.prompt:,}",
            today_completion=f"{today.completion:,}",
            month=f"{month.total:,}",
            month_prompt=f"{month.prompt:,}",
            month_completion=f"{month.completion:,}",
        )


_USAGE_FIELDS = ("today", "today_prompt", "today_completion", "month", "month_prompt", "month_completion")


async def forget_everything(
    history: HistoryStore, memory: MemoryService | None, person_id: str, asked_at: float
) -> int | None:
    """/forget all (and the console's erase): our own copies go first, whatever the memory store says —
    history, summaries holding their words, stored messages, reminders, files, token counts — then the
    long-term memories. How many memories were erased; None when the memory store could not be reached."""
    await history.erase_person(person_id, asked_at)
    await history.shrink()
    try:
        if memory is None:
            raise MemoryUnavailable
        return await memory.forget_person(person_id, asked_at)
    except Exception as exc:
        log.warning("/forget all: long-term memories not erased (%s)", type(exc).__name__)
        return None
