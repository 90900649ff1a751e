"""The agent loop on LangChain's own machinery: the model with the tools bound (`bind_tools`), its
`tool_calls` read by LangChain (from whole answers and from streamed deltas alike), each call run through
the Toolbox and answered with a ToolMessage, for at most AGENT_MAX_STEPS rounds; after the last allowed
round the model is asked once more without tools, so it answers with what it has.

Each round is one `ask` (agent/model/answer.py): the same retries, cut-off detection and streaming as a
plain answer. An AI card sees the text of every round so far, and a status line while a tool runs."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from agent.errors import ModelError
from agent.model.answer import AnswerStream, ModelAnswer, ask
from agent.prompts.loader import PromptSet
from agent.tools.toolbox import MAX_CALLS_PER_ROUND, Toolbox, ToolWatcher


class ToolsUsedError(ModelError):
    """A model failure after a tool already acted (a reminder set): the answer must not be asked again
    from the start, and the person is told what the tools did (`results`: their successful results)."""

    def __init__(self, error: ModelError, results: list[str]) -> None:
        super().__init__(error.kind, error.cause, error.fix, cause_zh=error.cause_zh, fix_zh=error.fix_zh)
        self.results = results


@dataclass
class _Card:
    """One round's view of the answer stream: earlier rounds' text before this round's."""

    outer: AnswerStream
    before: str = ""
    current: str = ""  # this round's text so far

    async def started(self) -> None:
        await self.outer.started()

    async def text(self, so_far: str) -> None:
        self.current = so_far
        await self.outer.text(_joined(self.before, so_far))

    async def status(self, line: str) -> None:
        """A tool runs: its status line under what was said so far."""
        await self.outer.text(_joined(_joined(self.before, self.current), line))


class _Watch:
    """Status lines into the card while a tool runs; the caller's own watcher told too."""

    def __init__(self, card: _Card | None, watcher: ToolWatcher | None) -> None:
        self.card = card
        self.watcher = watcher

    async def tool_started(self, name: str, args: dict[str, Any], status: str) -> None:
        if self.card is not None:
            await self.card.status(status)
        if self.watcher is not None:
            await self.watcher.tool_started(name, args, status)

    async def tool_finished(self, name: str, outcome: str) -> None:
        if self.watcher is not None:
            await self.watcher.tool_finished(name, outcome)


_SCHEMAS: OrderedDict[tuple[str, str, int], tuple[Any, dict[str, Any]]] = OrderedDict()
_SCHEMAS_KEPT = 256


def openai_schema(tool: BaseTool) -> dict[str, Any]:
    """The tool as the model is told of it (OpenAI's function format), made once per tool shape: building
    it from the arguments' model costs ~1 ms a tool, on every message otherwise."""
    shape = tool.args_schema
    key = (tool.name, tool.description, id(shape))
    kept = _SCHEMAS.get(key)
    if kept is not None and kept[0] is shape:  # the very same arguments' object (its id is not reused)
        _SCHEMAS.move_to_end(key)
        return copy.deepcopy(kept[1])  # a model may add to what it is given
    schema = convert_to_openai_tool(tool)
    _SCHEMAS[key] = (shape, schema)
    while len(_SCHEMAS) > _SCHEMAS_KEPT:
        _SCHEMAS.popitem(last=False)
    return copy.deepcopy(schema)


def _joined(before: str, now: str) -> str:
    return f"{before}\n\n{now}" if before and now else before or now


async def run_agent(
    model: BaseChatModel,
    messages: list[BaseMessage],
    tools: list[BaseTool],
    *,
    toolbox: Toolbox,
    prompts: PromptSet,
    max_steps: int,
    classify: Callable[[BaseException], ModelError],
    retries: int,
    stream: AnswerStream | None = None,
    watcher: ToolWatcher | None = None,
) -> ModelAnswer:
    """The answer to `messages` (the rendered prompt), calling `tools` as the model asks."""
    by_name = {tool.name: tool for tool in tools}
    schemas = [openai_schema(tool) for tool in tools]
    bound = model.bind_tools(schemas) if tools else model
    # The last round may not call tools, but still sees them: some servers refuse a conversation with
    # tool calls in it and no tools declared.
    closing = model.bind_tools(schemas, tool_choice="none") if tools else model
    card = _Card(stream) if stream is not None else None
    watch = _Watch(card, watcher)
    said: list[str] = []  # the text of each round, in order
    results: list[str] = []  # what the tools that worked answered
    conversation = list(messages)
    for step in range(max_steps + 1):
        last = step == max_steps or not tools
        if card is not None:
            card.current = ""
        try:
            answer = await ask(
                closing if last else bound, conversation, card, classify=classify, retries=retries
            )
        except ModelError as error:
            if results or len(conversation) > len(messages):
                raise ToolsUsedError(error, results) from error
            raise
        if answer.text:
            said.append(answer.text)
        reply = answer.message
        calls = reply.tool_calls if isinstance(reply, AIMessage) and not last else []
        broken = reply.invalid_tool_calls if isinstance(reply, AIMessage) and not last else []
        if (not calls and not broken) or reply is None:
            return ModelAnswer("\n\n".join(said), answer.truncated, reply)
        conversation.append(reply)
        for invalid in broken:  # arguments that are not JSON: said so, the model tries again or explains
            reason = f"arguments are not valid JSON: {str(invalid.get('error') or '')[:120]}"
            conversation.append(
                ToolMessage(
                    prompts.tool_result("failed", tool=invalid.get("name") or "?", reason=reason),
                    tool_call_id=invalid.get("id") or "",
                    name=invalid.get("name") or "",
                    status="error",
                )
            )
        for number, call in enumerate(calls):
            if number >= MAX_CALLS_PER_ROUND:
                conversation.append(
                    ToolMessage(
                        prompts.tool_result("too_many", limit=MAX_CALLS_PER_ROUND),
                        tool_call_id=call.get("id") or "",
                        name=call["name"],
                        status="error",
                    )
                )
                continue
            result = await toolbox.call(call, by_name, prompts, watch)
            conversation.append(result)
            if result.status == "success":
                results.append(str(result.content))
        if card is not None:
            card.before = "\n\n".join(said)
    raise AssertionError("unreachable")  # pragma: no cover
