"""The offline chat model of mock mode: its answer shows what it was given (the fact extractor is
agent/model/mock_memory.py). Nothing here touches the network."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from agent.model.mock_tools import tool_calls_for

_MEMORY_BLOCK = re.compile(r"<memories>(.*?)</memories>", re.DOTALL)
_DOCUMENT = re.compile(
    r'<attached_document name="([^"]*)" type="([^"]*)" size="([^"]*)">.*?</attached_document>', re.DOTALL
)


def _picture_size(part: dict[str, Any]) -> str:
    """ "1280×720 的 PNG": read back from the data URL the model was sent."""
    import base64
    import io

    from PIL import Image

    url = str(part.get("image_url", {}).get("url", ""))
    try:
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
            return f"{image.width}×{image.height} 的 {image.format}"
    except (IndexError, ValueError, OSError):
        return "无法解码的"


def _after_documents(text: str) -> str:
    """The person's words: what follows the last attached document (and whatever introduced it)."""
    found = list(_DOCUMENT.finditer(text))
    return (text[found[-1].end() :] if found else text).strip()


def received(message: BaseMessage) -> tuple[str, str]:
    """What a person's message gave the model besides plain words, as a sentence
    ("收到 1 张 1280×720 的 PNG 图片和 2 段文字", "收到文件《周报.pdf》（PDF，3 页，4,120 字）"),
    and its words without the documents' text."""
    content = message.content
    parts = [content] if isinstance(content, str) else content
    texts = [_after_documents(p if isinstance(p, str) else str(p.get("text", ""))) for p in parts
             if isinstance(p, str) or p.get("type") == "text"]  # fmt: skip
    texts = [t for t in texts if t]
    pictures = [_picture_size(p) for p in parts if isinstance(p, dict) and p.get("type") == "image_url"]
    whole = "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in parts)
    documents = [f"文件《{name}》（{kind}，{size}）" for name, kind, size in _DOCUMENT.findall(whole)]
    said: list[str] = []
    if len(pictures) == 1:
        said.append(f"1 张 {pictures[0]} 图片")
    elif pictures:
        said.append(f"{len(pictures)} 张图片（{'、'.join(pictures)}）")
    said.extend(documents)
    if not said:
        return "", "\n".join(texts)
    if texts:
        said.append(f"{len(texts)} 段文字")
    spaced = [f" {piece}" if piece[0].isdigit() else piece for piece in said]  # 收到 1 张…和 2 段文字
    listed = "、".join(spaced[:-1]) + "和" + spaced[-1] if len(spaced) > 1 else spaced[0]
    return f"收到{listed}。", "\n".join(texts)


def content_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content)


class OfflineModel(BaseChatModel):
    """A model that computes its answer from the messages, offline and deterministic."""

    def answer(self, messages: list[BaseMessage]) -> str:
        raise NotImplementedError

    def reply(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        """The whole answer; `kwargs` are what the model was bound with (tools, tool_choice)."""
        return AIMessage(content=self.answer(messages))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.reply(messages, **kwargs))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Pure computation: answer on the event loop instead of LangChain's default thread hop.
        return self._generate(messages, stop, **kwargs)


class MockChatModel(OfflineModel):
    """Deterministic, offline chat model for mock mode (FORCE_MOCK_OPENAI=1).

    Its answer shows what it was given: the person's words (the last human message), how many
    history turns preceded them, and how many memories the system message listed between
    `<memories>` and `</memories>` (lines starting with "- ").
    """

    reply_template: str
    template_source: Callable[[], str] | None = None  # the current template (prompts reload), else the above
    chunk_size: int = 8

    @property
    def _llm_type(self) -> str:
        return "dingbot-mock"

    def describe(self, messages: list[BaseMessage]) -> str:
        humans = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
        last = humans[-1] if humans else len(messages)
        seen, text = received(messages[last]) if humans else ("", "")
        turns = sum(1 for m in messages[:last] if isinstance(m, AIMessage))
        memory_count = 0
        for message in messages:
            if isinstance(message, SystemMessage):
                for block in _MEMORY_BLOCK.findall(content_text(message)):
                    memory_count += sum(1 for line in block.splitlines() if line.strip().startswith("- "))
        template = self.template_source() if self.template_source else self.reply_template
        answer = template.format(text=text, history_turns=turns, memory_count=memory_count)
        return f"{seen}\n{answer}" if seen else answer

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def acting(
        self, messages: list[BaseMessage], tools: list[dict[str, Any]] | None, tool_choice: Any = None
    ) -> AIMessage | None:
        """With tools bound: the tool calls a real model would make, or the answer after tool results
        (the results themselves: a reminder tool's result is the sentence to say). None: just talk."""
        if not tools:
            return None
        results: list[str] = []
        for message in reversed(messages):
            if not isinstance(message, ToolMessage):
                break
            results.insert(0, content_text(message))
        if results:
            return AIMessage(content="\n".join(results))
        if tool_choice == "none":
            return None
        names = {str(tool.get("function", {}).get("name", "")) for tool in tools}
        humans = [m for m in messages if isinstance(m, HumanMessage)]
        system = "".join(content_text(m) for m in messages if isinstance(m, SystemMessage))
        words = received(humans[-1])[1] if humans else ""  # the person's words, not an attached file's
        calls = tool_calls_for(words, system, names) if words else []
        return AIMessage(content="", tool_calls=calls) if calls else None

    def reply(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        acted = self.acting(messages, kwargs.get("tools"), kwargs.get("tool_choice"))
        return acted or AIMessage(content=self.describe(messages))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._stream(messages, stop, **kwargs):
            if run_manager:
                await run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        whole = self.reply(messages, **kwargs)
        if whole.tool_calls:
            pieces = [
                {
                    "name": c["name"],
                    "args": json.dumps(c["args"], ensure_ascii=False),
                    "id": c["id"],
                    "index": i,
                }
                for i, c in enumerate(whole.tool_calls)
            ]
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=pieces))
            return
        text = content_text(whole)
        for start in range(0, len(text), self.chunk_size):
            piece = text[start : start + self.chunk_size]
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
