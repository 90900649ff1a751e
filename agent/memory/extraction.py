"""From what a person said to the facts worth keeping: the extraction prompt (prompts/memory.yaml) on a
capped model that is asked for JSON, one repair when the answer is not JSON (weak models), never the
prompt's own example facts, and the guard in code (agent/memory/guard.py) before anything is stored.

A fact may name, by number, the known facts it updates ({"text": "用户住在上海", "replaces": [2]}: the
person moved); the memory service erases those once the new one is stored. A fact the guard drops takes
its replacements with it, so a poisoned update removes nothing."""

from __future__ import annotations

import json
import logging
import re
import weakref
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from agent.memory.guard import unsafe_reason
from agent.messages import IncomingMessage
from agent.observe import NoObserver, Observer
from agent.prompts.loader import PromptSet

log = logging.getLogger(__name__)

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_QUOTED = re.compile(r'"([^"]+)"')
_KEYS = frozenset({"facts", "text", "replaces", "memory"})
MAX_REPLACED = 3  # known facts one message may replace: an update, never a purge


@dataclass(frozen=True)
class Learned:
    """A fact to store, and the numbers (1-based, as the prompt listed them) of the known facts it updates."""

    text: str
    replaces: tuple[int, ...] = ()


def _numbers(value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    found = [n for n in value if isinstance(n, int) and not isinstance(n, bool) and n > 0]
    return tuple(dict.fromkeys(found))[:MAX_REPLACED]


def parse_facts(answer: str) -> list[Learned] | None:
    """The facts of an extraction answer — {"facts": [...]} of strings or {"text", "replaces"} objects,
    mem0's {"memory": [{"text"}]} accepted too — or None when the answer holds no such JSON at all (a model
    that did not follow the instructions)."""
    match = _JSON_OBJECT.search(answer)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return None
    items = data.get("facts", data.get("memory")) if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    facts = []
    for item in items:
        text = item.get("text") if isinstance(item, dict) else item
        if isinstance(text, str) and text.strip():
            replaces = _numbers(item.get("replaces")) if isinstance(item, dict) else ()
            facts.append(Learned(" ".join(text.split())[:500], replaces))
    return facts


def _text(message: BaseMessage) -> str:
    return message.content if isinstance(message.content, str) else str(message.content)


class Extractor:
    def __init__(self, model: BaseChatModel, observer: Observer | None = None) -> None:
        self.model = model
        self.observer: Observer = observer or NoObserver()
        self._examples: weakref.WeakKeyDictionary[PromptSet, frozenset[str]] = weakref.WeakKeyDictionary()

    def examples(self, prompts: PromptSet) -> frozenset[str]:
        """The placeholder facts of the prompt's own examples ("事实一"), the strings on its lines that show
        the JSON answer: a weak model copies them."""
        found = self._examples.get(prompts)
        if found is None:
            text = "\n".join(
                str(m.prompt.template) for m in prompts.extraction.messages if hasattr(m, "prompt")
            )
            lines = [line for line in text.splitlines() if '"facts"' in line]
            found = frozenset(q for line in lines for q in _QUOTED.findall(line) if q not in _KEYS)
            self._examples[prompts] = found
        return found

    async def facts(self, prompts: PromptSet, message: IncomingMessage, known: list[str]) -> list[Learned]:
        """The new facts in what the person said, guarded; [] when there are none or the model failed.
        `known` is what the prompt lists, numbered from 1, as a fact's `replaces` refers to it."""
        asked = prompts.extraction.format_messages(
            speaker_nick=message.sender_nick or "用户",
            existing="\n".join(f"  {n}. {text}" for n, text in enumerate(known, start=1)) or "  （暂无）",
            text=message.text,
        )
        answer = _text(await self.model.ainvoke(asked))
        found = parse_facts(answer)
        if found is None:  # once more, told what was wrong: small models often get it the second time
            repair = HumanMessage(prompts.extraction_repair.format())
            found = parse_facts(_text(await self.model.ainvoke([*asked, AIMessage(answer), repair])))
            if found is None:
                log.warning(
                    "memory extraction: the model answered without the JSON the prompt asks for, twice; "
                    "nothing learned from this message. Fix: a model that follows instructions better, or "
                    "a clearer prompts/memory.yaml"
                )
                self.observer.extraction_failed("not_json")
                return []
        facts: list[Learned] = []
        replacing = 0  # MAX_REPLACED for the whole message too: an update, never a purge
        for fact in found:
            replaces = tuple(n for n in fact.replaces if n <= len(known) and known[n - 1] != fact.text)
            replaces = replaces[: max(MAX_REPLACED - replacing, 0)]
            if fact.text in self.examples(prompts):
                log.info("memory extraction: the prompt's own example fact dropped")
            elif reason := unsafe_reason(fact.text):
                log.info(
                    "memory guard dropped an extracted fact (%s)%s",
                    reason,
                    " and its update" * bool(replaces),
                )
            elif (fact.text not in known or replaces) and fact.text not in [f.text for f in facts]:
                facts.append(Learned(fact.text, replaces))
                replacing += len(replaces)
        return facts
