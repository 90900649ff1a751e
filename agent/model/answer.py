"""One model answer, whole or streamed, and whether the model was cut off at MAX_TOKENS
(`finish_reason: length`): a cut answer must not be sent as if it were whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable

Chain = Runnable[dict[str, Any], BaseMessage]


class AnswerStream(Protocol):
    """Who watches a model answer being written (an AI card): told when the model starts, then given
    the whole text so far after each piece. The final Reply still comes from the assistant."""

    async def started(self) -> None: ...

    async def text(self, so_far: str) -> None: ...


@dataclass(frozen=True)
class ModelAnswer:
    text: str
    truncated: bool  # the model stopped at its token cap, not because it was done


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content)


def _cut_off(message: BaseMessage) -> bool:
    metadata = message.response_metadata or {}
    return metadata.get("finish_reason") == "length" or metadata.get("stop_reason") == "max_tokens"


async def ask(chain: Chain, inputs: dict[str, Any], stream: AnswerStream | None = None) -> ModelAnswer:
    """Run the chain once; with `stream`, the answer is streamed and `stream` sees it grow."""
    if stream is None:
        message = await chain.ainvoke(inputs)
        return ModelAnswer(_text(message).strip(), _cut_off(message))
    await stream.started()
    whole: BaseMessage | None = None
    async for piece in chain.astream(inputs):
        whole = piece if whole is None else _joined(whole, piece)
        await stream.text(_text(whole))
    if whole is None:
        return ModelAnswer("", False)
    return ModelAnswer(_text(whole).strip(), _cut_off(whole))


def _joined(whole: BaseMessage, piece: BaseMessage) -> BaseMessage:
    if isinstance(whole, AIMessageChunk) and isinstance(piece, AIMessageChunk):
        return whole + piece  # content and response_metadata (the last piece's finish_reason) merged
    return piece
