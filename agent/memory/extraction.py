"""From what a person said to the facts worth keeping: the extraction prompt (prompts/memory.yaml) on a
capped model that is asked for JSON, one repair when the answer is not JSON (weak models), never the
prompt's own example facts, and the guard in code (agent/memory/guard.py) before anything is stored."""

from __future__ import annotations

import json
import logging
import re
import weakref

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from agent.memory.guard import unsafe_reason
from agent.messages import IncomingMessage
from agent.observe import NoObserver, Observer
from agent.prompts.loader import PromptSet

log = logging.getLogger(__name__)

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_EXAMPLE_OBJECT = re.compile(r"\{[^{}]*\}")


def parse_facts(answer: str) -> list[str] | None:
    """The facts of an extraction answer — {"facts": [...]}, mem0's {"memory": [{"text"}]} accepted too —
    or None when the answer holds no such JSON at all (a model that did not follow the instructions)."""
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
            facts.append(" ".join(text.split())[:500])
    return facts


def _text(message: BaseMessage) -> str:
    return message.content if isinstance(message.content, str) else str(message.content)


class Extractor:
    def __init__(self, model: BaseChatModel, observer: Observer | None = None) -> None:
        self.model = model
        self.observer: Observer = observer or NoObserver()
        self._examples: weakref.WeakKeyDictionary[PromptSet, frozenset[str]] = weakref.WeakKeyDictionary()

    def examples(self, prompts: PromptSet) -> frozenset[str]:
        """The placeholder facts of the prompt's own example ("事实一"): a weak model copies them."""
        found = self._examples.get(prompts)
        if found is None:
            text = "\n".join(
                str(m.prompt.template) for m in prompts.extraction.messages if hasattr(m, "prompt")
            )
            text = text.replace("{{", "{").replace("}}", "}")
            found = frozenset(f for obj in _EXAMPLE_OBJECT.findall(text) for f in parse_facts(obj) or [])
            self._examples[prompts] = found
        return found

    async def facts(self, prompts: PromptSet, message: IncomingMessage, known: list[str]) -> list[str]:
        """The new facts in what the person said, guarded; [] when there are none or the model failed."""
        asked = prompts.extraction.format_messages(
            speaker_nick=message.sender_nick or "用户",
            existing="\n".join(f"  - {text}" for text in known) or "  （暂无）",
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
        facts: list[str] = []
        for fact in found:
            if fact in self.examples(prompts):
                log.info("memory extraction: the prompt's own example fact dropped")
            elif reason := unsafe_reason(fact):
                log.info("memory guard dropped an extracted fact (%s)", reason)
            elif fact not in known and fact not in facts:
                facts.append(fact)
        return facts
