"""Fitting a conversation into the model's context, so one long answer cannot break a conversation for
good: a token estimate that needs no tokenizer download (offline), the context length (MODEL_CONTEXT_TOKENS,
else probed from the server, else learned from a refusal, else 8192), and the recent turns that fit."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from langchain_core.messages import BaseMessage

from agent.settings.choices import Provider
from agent.settings.config import Settings

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_TOKENS = 8192
MARGIN_TOKENS = 64  # chat-template tokens and rounding the estimate does not see
PER_MESSAGE_TOKENS = 4
PROBE_TIMEOUT_SECONDS = 5.0
# Runs, not single characters: counted as the sum of the runs' lengths (one match per run is 2.4x faster
# than one per character: 82 -> 34 us for a 1,400-character prompt; the estimate runs on every turn of
# every prompt).
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]+")
_WORD = re.compile(r"[A-Za-z0-9]+")
CACHED_CHARS = 2000  # texts up to this long are remembered: a conversation's turns come back every message
_STATED = re.compile(
    r"(?:maximum context length is|context (?:size|length|window)[^0-9]{0,20})\s*(\d{3,9})", re.I
)


def estimate_tokens(text: str) -> int:
    """On the high side for the tokenizers of common open models: a CJK character may take two tokens
    (Llama 2's byte fallback), Latin text about a token per three characters."""
    return _cached_estimate(text) if len(text) <= CACHED_CHARS else _estimate(text)


def _estimate(text: str) -> int:
    cjk = sum(map(len, _CJK.findall(text)))
    latin = sum(map(len, _WORD.findall(text)))
    other = len(text) - cjk - latin - text.count(" ") - text.count("\n")
    return int(cjk * 1.5 + latin / 3 + max(other, 0) * 0.6) + 1


_cached_estimate = functools.lru_cache(maxsize=4096)(_estimate)


def estimate_messages(messages: list[BaseMessage]) -> int:
    return sum(estimate_tokens(str(m.content)) + PER_MESSAGE_TOKENS for m in messages)


class ContextWindow:
    """How many tokens the model takes, prompt and answer together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.probed: int | None = None
        self.learned: int | None = None  # from a server that refused a prompt and said its limit

    @property
    def tokens(self) -> int:
        known = self.settings.model_context_tokens or self.probed or DEFAULT_CONTEXT_TOKENS
        return min(known, self.learned) if self.learned else known

    def learn_from(self, refusal: str) -> None:
        """A context_length_exceeded answer that states the limit: believe it from now on."""
        if match := _STATED.search(refusal):
            self.learned = int(match.group(1))
            log.warning(
                "model context: the endpoint says %d tokens; prompts are fitted to that", self.learned
            )

    def fit(
        self, fixed: list[BaseMessage], history: list[BaseMessage], answer_tokens: int
    ) -> list[BaseMessage]:
        """The most recent whole turns of `history` that fit beside `fixed` (system prompt and the new
        message) and the answer's `answer_tokens`."""
        budget = self.tokens - answer_tokens - MARGIN_TOKENS - estimate_messages(fixed)
        kept: list[BaseMessage] = []
        for end in range(len(history), 0, -2):
            turn = history[max(end - 2, 0) : end]
            cost = estimate_messages(turn)
            if cost > budget:
                break
            kept[:0] = turn
            budget -= cost
        return kept

    def probe(self) -> int | None:
        """Ask the server (blocking; run it in a thread): llama.cpp's /props, or vLLM's max_model_len."""
        if (
            self.settings.mock_mode
            or self.settings.model_context_tokens
            or self.settings.provider
            not in (
                Provider.LOCAL,
                Provider.COMPATIBLE,
            )
        ):
            return None
        import httpx

        base = self.settings.openai_api_base.rstrip("/")
        parts = urlsplit(base)
        root = f"{parts.scheme}://{parts.netloc}"
        key = self.settings.openai_api_key.get_secret_value() if self.settings.openai_api_key else ""
        found: int | None = None
        with httpx.Client(
            timeout=PROBE_TIMEOUT_SECONDS, headers={"Authorization": f"Bearer {key}"}
        ) as client:
            for url, read in ((f"{root}/props", _from_props), (f"{base}/models", self._from_models)):
                try:
                    response = client.get(url)
                    found = read(response.json()) if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError):
                    found = None
                if found:
                    break
        if found:
            self.probed = found
            log.info("model context: %d tokens (from the server)", found)
        return found

    def _from_models(self, body: Any) -> int | None:
        items = body.get("data") if isinstance(body, dict) else None
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("id") == self.settings.openai_model:
                value = item.get("max_model_len")
                return int(value) if isinstance(value, int) and value > 0 else None
        return None


def _from_props(body: Any) -> int | None:
    settings = body.get("default_generation_settings") if isinstance(body, dict) else None
    value = settings.get("n_ctx") if isinstance(settings, dict) else None
    return int(value) if isinstance(value, int) and value > 0 else None
