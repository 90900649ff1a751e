"""`dingbot chat`: talk to the assistant in a terminal, through the service's own code.

The same assistant, prompts (reloaded when a file changes), history and long-term memory as the
service (agent/assembly.py), with its own data folder by default: the embedded memory store has one
owner, and a running service owns its folder (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

DEFAULT_DATABASE = Path("dingbot_chat.db")
QUIT = frozenset({"/quit", "/exit", "/退出"})


def add_parser(sub: Any) -> None:
    chat = sub.add_parser(
        "chat", help="talk to the assistant in the terminal (same prompts, memory and code as the service)"
    )
    chat.add_argument("--user", default="local-user", help="the speaker's id (staff id); memory is per id")
    chat.add_argument("--nick", default="", help="the speaker's nick (default: the id)")
    chat.add_argument("--group", metavar="TITLE", help="talk as in a group with this title (default: 1:1)")
    chat.add_argument(
        "--conversation-id", help="the conversation id, e.g. a group's id named in prompts/groups/*.yaml"
    )
    chat.add_argument(
        "--database",
        type=Path,
        default=None,
        help=f"the chat's own database; memory lives in a folder beside it (default: {DEFAULT_DATABASE})",
    )
    chat.add_argument("--no-memory", action="store_true", help="without long-term memory (starts faster)")
    chat.set_defaults(handler=run)


class PromptRecorder:
    """Keeps the messages of the last model call (a LangChain callback), for /prompt."""

    def __init__(self) -> None:
        from langchain_core.callbacks import BaseCallbackHandler

        recorder = self
        self.last: list[Any] = []

        class Handler(BaseCallbackHandler):
            def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], **kwargs: Any) -> None:
                recorder.last = list(messages[0]) if messages else []

        self.handler = Handler()


def attachment(line: str, say: Callable[..., None]) -> tuple[str, tuple[Any, ...]] | None:
    """`/image PATH [words]` and `/file PATH` as DingTalk would send them: (the words, the attachments);
    None when the path names no file (nothing is sent)."""
    from agent.messages import Media

    command, _, rest = line.partition(" ")
    if command not in ("/image", "/file") or not rest.strip():
        return line, ()
    path, _, words = rest.strip().partition(" ")
    where = str(Path(path).expanduser())
    if not Path(where).is_file():
        say(f"(no file at {where}: nothing sent)")
        return None
    if command == "/image":
        return words.strip(), (Media("picture", where),)
    if words.strip():
        say("(DingTalk sends a file without words: ask about it in your next message)")
    return "", (Media("file", where, Path(path).name),)


class ToolCalls:
    """Shows the model's tool calls as they happen (agent.tools.toolbox.ToolWatcher)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    async def tool_started(self, name: str, args: dict[str, Any], status: str) -> None:
        shown = ", ".join(f"{key}={value!r}" for key, value in args.items())
        self.say(f"  🔧 {name}({shown}) · {status}")

    async def tool_finished(self, name: str, outcome: str) -> None:
        self.say(f"  🔧 {name} → {outcome}")


async def fire_reminders(
    agent: Any, person: str, say: Callable[[str], None], every_seconds: float = 1.0
) -> None:
    """Reminders set in the chat fire in the terminal while it is open (a later chat fires the missed
    ones, late). The service fires its own, through DingTalk."""
    from agent.storage.connection import transaction
    from agent.tools.reminders import claim_due
    from agent.tools.toolbox import fired_text

    settings = agent.assistant.settings
    prompts = agent.prompts.defaults

    def claim(conn: Any) -> list[Any]:
        with transaction(conn):  # only this chat's person: never anyone else's in a shared database
            return claim_due(conn, agent.reminders.clock(), settings.reminder_grace_seconds, person_id=person)

    while True:
        try:
            for firing in await agent.database.run(claim):
                if not firing.dropped:
                    say(f"\n{settings.bot_name}> {fired_text(prompts, firing)}")
        except Exception as exc:  # the database away for a moment: tried again
            say(f"(reminders could not be checked: {type(exc).__name__})")
        await asyncio.sleep(every_seconds)


def _echoing_input(prompt: str) -> str:
    """`input`, and when the lines come from a pipe or file, the line shown after the prompt as if typed."""
    line = input(prompt)
    print(line, flush=True)
    return line


def run(args: argparse.Namespace) -> int:
    from agent.errors import ConfigError, PromptError

    read_line = input if sys.stdin.isatty() else _echoing_input
    try:
        return asyncio.run(chat(args, read_line, sys.stdout))
    except (ConfigError, PromptError) as exc:
        print(f"dingbot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


async def chat(args: argparse.Namespace, read_line: Callable[[str], str], out: TextIO) -> int:
    from agent.memory.failures import describe_holders
    from agent.memory.store import held_by_another_process
    from agent.model.factory import build_chat_model
    from agent.prompts.library import PromptLibrary
    from agent.settings.loading import load_settings

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    database = args.database or DEFAULT_DATABASE
    settings = load_settings(database_path=database)
    if not args.no_memory and held_by_another_process(settings):
        who = describe_holders(settings)
        print(
            f"dingbot: the memory folder {settings.memory_folder} belongs to a running DingHook service"
            + (f" ({who})" if who else "")
            + ", and "
            "an embedded memory store has one owner. `dingbot chat` keeps its own data "
            f"({DEFAULT_DATABASE}) unless --database says otherwise: leave out --database, stop the "
            "service, or add --no-memory.",
            file=sys.stderr,
        )
        return 2
    recorder = PromptRecorder()
    library = PromptLibrary(settings.prompts_dir)
    model = build_chat_model(
        settings, mock_reply_template=lambda: library.defaults.reply_template("mock_reply")
    )
    # A copy answers (and is recorded for /prompt); the original, unrecorded, extracts memories.
    answering = model.model_copy(update={"callbacks": [recorder.handler]})
    mcp = None
    if settings.mcp_config is not None:  # the operator's MCP servers, started for this chat
        from agent.tools.mcp import McpServers

        mcp = McpServers.from_file(settings.mcp_config, settings.tool_timeout_seconds)
        await mcp.start()
    try:
        return await _talk(args, read_line, say, settings, library, recorder, answering, mcp, database)
    finally:
        if mcp is not None:
            await mcp.stop()


async def _talk(
    args: argparse.Namespace,
    read_line: Callable[[str], str],
    say: Callable[..., None],
    settings: Any,
    library: Any,
    recorder: PromptRecorder,
    answering: Any,
    mcp: Any,
    database: Path,
) -> int:
    from agent.assembly import open_agent
    from agent.media.reader import LocalFiles
    from agent.messages import ContentKind, IncomingMessage
    from agent.model.factory import build_extraction_model
    from agent.model.scripted import render

    user = args.user
    is_group = args.group is not None
    conversation_id = args.conversation_id or (f"chat-group:{args.group}" if is_group else f"chat:{user}")
    async with open_agent(
        settings,
        memory=not args.no_memory,
        prompts=library,
        model=answering,
        extraction_model=build_extraction_model(settings),
        mcp=mcp,
        media=LocalFiles(),
    ) as agent:
        bot = settings.bot_name
        model_name = "mock" if settings.mock_mode else settings.openai_model
        memory_state = "off" if agent.memory is None or not agent.memory.available else "on"
        say(f"DingHook chat · {settings.provider.value} model {model_name} · long-term memory {memory_state}")
        say(f"data: {database} (memory in {settings.memory_folder}/) · prompts: {settings.prompts_dir}")
        place = f"group 「{args.group}」" if is_group else "one-to-one"
        say(f"you are {args.nick or user} (id {user}), {place}, conversation {conversation_id}")
        say("prompt files are reloaded when they change · /prompt shows the last prompt · /quit leaves")
        say("/image PATH [question] sends a picture, /file PATH a file (as DingTalk would)")
        if agent.assistant.settings.agent_max_steps:
            say("tools: reminders (they fire here while the chat is open)" + (" and MCP" if mcp else ""))
        say()
        watcher = ToolCalls(say)
        firing = asyncio.create_task(fire_reminders(agent, f"chat:{user}", say), name="chat-reminders")
        version = library.version
        number, session = 0, uuid.uuid4().hex[:12]
        while True:
            try:
                text = await asyncio.to_thread(read_line, "你> ")
            except EOFError:
                say()
                break
            text = text.strip()
            if text in QUIT:
                break
            if text == "/prompt":
                say(render(recorder.last).rstrip() if recorder.last else "(no model call yet)")
                continue
            if agent.memory is not None:
                await agent.memory.settle()  # what the last message taught is stored (it learns meanwhile)
            sent = attachment(text, say)
            if sent is None:
                continue
            text, media = sent
            number += 1
            message = IncomingMessage(
                message_id=f"chat-{session}-{number}",  # unique: what a message did is keyed by its id
                conversation_id=conversation_id,
                is_group=is_group,
                person_id=f"chat:{user}",
                sender_id=f"$:chat:{user}",
                sender_staff_id=user,
                sender_nick=args.nick or user,
                text=text,
                kind=ContentKind.MEDIA if media else ContentKind.TEXT if text else ContentKind.EMPTY,
                conversation_title=args.group or "",
                media=media,
            )
            library.refresh()
            if library.version != version:
                version = library.version
                if library.problems:
                    say("(prompt files changed; not used, the last good version stays:)")
                    for problem in library.problems:
                        say(f"  ✗ {problem}")
                else:
                    say(f"(prompts reloaded: version {version})")
            reply = await agent.assistant.reply(message, watcher=watcher)
            say(f"{bot}> {reply.text}")
            await agent.assistant.remember(message, reply)
        firing.cancel()
        await asyncio.gather(firing, return_exceptions=True)
    return 0
