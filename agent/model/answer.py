"""One model answer, whole or streamed, retried only where a retry can help, and whether the model was
cut off at MAX_TOKENS (`finish_reason: length`): a cut answer must not be sent as if it were whole."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable

from agent.errors import ModelError, ModelErrorKind

log = logging.getLogger(__name__)

Chain = Runnable[Any, BaseMessage]  # a prompt | model chain (inputs), or a model (messages)
RETRIED = frozenset({ModelErrorKind.CONNECTION, ModelErrorKind.RATE_LIMITED, ModelErrorKind.SERVER_ERROR})
RETRY_BASE_SECONDS = 1.0


class AnswerStream(Protocol):
    """Who watches a model answer being written (an AI card): told when the model starts, then given
    the whole text so far after each piece. The final Reply still comes from the assistant."""

    async def started(self) -> None: ...

    async def text(self, so_far: str) -> None: ...


@dataclass(frozen=True)
class ModelAnswer:
    text: str
    truncated: bool  # the model stopped at its token cap, not because it was done
    message: BaseMessage | None = None  # the whole answer (its tool calls, when it made any)


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content)


def _cut_off(message: BaseMessage) -> bool:
    metadata = message.response_metadata or {}
    return metadata.get("finish_reason") == "length" or metadata.get("stop_reason") == "max_tokens"


async def ask(
    chain: Chain,
    inputs: Any,
    stream: AnswerStream | None = None,
    *,
    classify: Callable[[BaseException], ModelError],
    retries: int = 0,
) -> ModelAnswer:
    """The chain's answer; with `stream`, streamed, and `stream` sees it grow. Raises the classified
    ModelError. Retried (`retries` times, with backoff) only where another try can help: a refused
    connection, a rate limit, a server error — never a timeout (the server may still be working on the
    abandoned request: a retry would double its load), never once the person saw part of the answer."""
    for attempt in range(retries + 1):
        shown = [False]
        try:
            return await _once(chain, inputs, stream, shown)
        except Exception as exc:
            error = exc if isinstance(exc, ModelError) else classify(exc)
            if error.kind not in RETRIED or attempt == retries or shown[0]:
                raise error from exc
            wait = RETRY_BASE_SECONDS * 2**attempt * random.uniform(0.8, 1.2)  # noqa: S311 - jitter
            log.info("model call failed (%s): trying again in %.1f s", error.kind.value, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


async def _once(chain: Chain, inputs: Any, stream: AnswerStream | None, shown: list[bool]) -> ModelAnswer:
    if stream is None:
        message = await chain.ainvoke(inputs)
        return ModelAnswer(_text(message).strip(), _cut_off(message), message)
    await stream.started()
    whole: BaseMessage | None = None
    async for piece in chain.astream(inputs):
        whole = piece if whole is None else _joined(whole, piece)
        shown[0] = shown[0] or bool(_text(whole))
        await stream.text(_text(whole))
    if whole is None:
        return ModelAnswer("", False)
    return ModelAnswer(_text(whole).strip(), _cut_off(whole), whole)


def _joined(whole: BaseMessage, piece: BaseMessage) -> BaseMessage:
    if isinstance(whole, AIMessageChunk) and isinstance(piece, AIMessageChunk):
        return whole + piece  # content and response_metadata (the last piece's finish_reason) merged
    return piece
