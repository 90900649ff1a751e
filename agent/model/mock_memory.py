"""The offline fact extractor of mock mode: the person's own statements become facts in the canonical
form the extraction prompt asks for ("用户住在上海"), and a fact about a subject already remembered
(where they live, where they work, their team, their role, their name, a liking or a favourite) replaces
the old one, the way prompts/memory.yaml asks a real model to. Deterministic; nothing touches the network."""

from __future__ import annotations

import json
import re
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from agent.model.mock import OfflineModel, content_text

_CLAUSES = re.compile(r"[，。！？；,.!?;\n]+")
_QUESTION = re.compile(
    r"[?？]|吗|什么|怎么|为什么|哪|谁|几|多少|是否|\b(what|how|why|where|who|which|can i|do i)\b", re.I
)
_REQUEST = re.compile(r"提醒我|帮我|给我|remind me|help me", re.I)
_FIRST_PERSON = (  # rewritten to the third person; English only on word boundaries ("API" stays "API")
    (re.compile("我的"), "用户的"),
    (re.compile("我"), "用户"),
    (re.compile(r"\bI(?:'m| am)\b"), "User is"),
    (re.compile(r"\b[Mm]y\b"), "User's"),
    (re.compile(r"\bI\b"), "User"),
)
_KNOWN = re.compile(r"^ {2}(\d+)\. (.+)$", re.MULTILINE)  # the numbered facts the extraction prompt lists
_ROLES = "工程师|经理|负责人|总监|设计师|主管|组长|架构师|老师|医生|实习生|运营|销售|律师|会计|研究员|分析师"
_ENDING = r"(?:了|啦)?$"

# (subject, pattern, canonical form): a fact matching the pattern is about that subject, is stored in the
# canonical form, and replaces what was remembered about the same subject (and object, where {k} is one).
_RULES = (
    (
        "home",
        r"^用户(?:现在|已经)?(?:住在|搬到了?|搬家到了?|搬去了?|定居在)(?P<v>[^，,]+?)" + _ENDING,
        "用户住在{v}",
    ),
    ("home", r"^User (?:now )?(?:lives in|has moved to|moved to|lives at)\s+(?P<v>.+)$", "User lives in {v}"),
    (
        "team",
        r"^用户(?:现在)?(?:在|调到了?|转到了?|加入了?)(?P<v>\S+?(?:小组|组|团队|部门))(?:工作|上班)?"
        + _ENDING,
        "用户在{v}",
    ),
    (
        "work",
        r"^用户(?:现在)?(?:在|跳槽到了?|入职了?|去了?)(?P<v>\S+?)(?:工作|上班)" + _ENDING,
        "用户在{v}工作",
    ),
    ("work", r"^用户(?:跳槽到了?|入职了?)(?P<v>[^，,]+?)" + _ENDING, "用户在{v}工作"),
    ("work", r"^User (?:now )?(?:works at|works for|joined)\s+(?P<v>.+)$", "User works at {v}"),
    (
        "role",
        r"^用户(?:现在)?(?:是|当上了?|升职为|升为|成为了?|担任|转岗为|转做)(?P<v>\S*?(?:"
        + _ROLES
        + "))"
        + _ENDING,
        "用户是{v}",
    ),
    (
        "role",
        r"^User is (?:now )?(?:a|an|the) (?P<v>.*(?:engineer|manager|lead|director|designer|intern))$",
        "User is a {v}",
    ),
    ("name", r"^用户(?:叫|的名字是|名叫|改名叫|改名为)(?P<v>[^，,]+)$", "用户叫{v}"),
    (
        "favourite",
        r"^用户(?:现在)?最喜欢的(?P<k>\S+?)(?:是|变成了?|换成了?)(?P<v>.+?)" + _ENDING,
        "用户最喜欢的{k}是{v}",
    ),
    (
        "favourite",
        r"^User's (?:favourite|favorite) (?P<k>.+?) is (?:now )?(?P<v>.+)$",
        "User's favourite {k} is {v}",
    ),
    ("likes", r"^用户(?:现在)?(?:不再|不太|已经不|不)(?:喜欢|爱)(?P<k>.+?)" + _ENDING, "用户不喜欢{k}"),
    ("likes", r"^用户(?:现在)?(?:喜欢|爱)(?P<k>.+?)" + _ENDING, "用户喜欢{k}"),
    (
        "likes",
        r"^User (?:no longer|doesn't|does not|don't|do not) (?:like|enjoy)s? (?P<k>.+?)(?: any ?more)?$",
        "User doesn't like {k}",
    ),
    ("likes", r"^User (?:likes?|enjoys?) (?P<k>.+)$", "User likes {k}"),
)
_SUBJECTS = tuple(
    (name, re.compile(pattern, re.IGNORECASE), canonical) for name, pattern, canonical in _RULES
)


def subject(fact: str) -> tuple[str | None, str]:
    """The subject a fact is about ("home", "likes:喝咖啡", None for anything else) and its canonical form."""
    for name, pattern, canonical in _SUBJECTS:
        match = pattern.match(fact)
        if match:
            found = {k: v.strip() for k, v in match.groupdict().items()}
            key = f"{name}:{found['k'].lower()}" if "k" in found else name
            return key, canonical.format(**found)
    return None, fact


class MockExtractionModel(OfflineModel):
    """Deterministic, offline fact extraction for mock mode: the person's own statements become facts.

    Reads the last human message (the person's words), keeps first-person statements that are not
    questions, and answers the JSON the extraction prompt asks for: {"facts": [...]}, a fact that updates
    a numbered known fact as {"text": ..., "replaces": [n]}.
    """

    @property
    def _llm_type(self) -> str:
        return "dingbot-mock-extraction"

    @staticmethod
    def facts(text: str) -> list[str]:
        found: list[str] = []
        for clause in _CLAUSES.split(text):
            clause = clause.strip()
            if not clause or _QUESTION.search(clause) or not re.search(r"我|\b(I|I'm|[Mm]y)\b", clause):
                continue
            if _REQUEST.search(clause):  # "3分钟后提醒我喝水" asks for something: not a fact about them
                continue
            for first, third in _FIRST_PERSON:
                clause = first.sub(third, clause)
            clause = subject(clause)[1]
            if clause not in found:
                found.append(clause)
        return found

    def answer(self, messages: list[BaseMessage]) -> str:
        humans = [m for m in messages if isinstance(m, HumanMessage)]
        text = content_text(humans[-1]) if humans else ""
        system = "\n".join(content_text(m) for m in messages if isinstance(m, SystemMessage))
        known = [(int(n), fact) for n, fact in _KNOWN.findall(system)]
        facts: list[Any] = []
        for fact in self.facts(text):
            key = subject(fact)[0]
            stale = [n for n, old in known if key is not None and old != fact and subject(old)[0] == key]
            facts.append({"text": fact, "replaces": stale} if stale else fact)
        return json.dumps({"facts": facts}, ensure_ascii=False)


_LIMIT = re.compile(r"不超过\s*(\d+)\s*个\s*token")
_SUMMARY_PARTS = re.compile(r"已有摘要：\n(?P<summary>.*?)\n\n移出窗口的对话：\n(?P<turns>.*)", re.DOTALL)
_SAID = re.compile(r"^用户：(.+)$", re.MULTILINE)
SUMMARY_LINE_CHARS = 40


class MockSummaryModel(OfflineModel):
    """Deterministic, offline conversation summary for mock mode: the summary so far plus one line per
    turn that left the window ("- 用户说：…", the person's words, cut short), the oldest lines dropped
    once the whole passes the length the prompt asks for."""

    @property
    def _llm_type(self) -> str:
        return "dingbot-mock-summary"

    def answer(self, messages: list[BaseMessage]) -> str:
        from agent.model.tokens import count_tokens  # the budget's own counter

        system = "\n".join(content_text(m) for m in messages if isinstance(m, SystemMessage))
        limit = int(match.group(1)) if (match := _LIMIT.search(system)) else 300
        humans = [content_text(m) for m in messages if isinstance(m, HumanMessage)]
        parts = _SUMMARY_PARTS.search(humans[-1] if humans else "")
        if parts is None:
            return ""
        lines = [line for line in parts["summary"].splitlines() if line.startswith("- ")]
        for said in _SAID.findall(parts["turns"]):
            said = " ".join(said.split())
            lines.append(
                f"- 用户说：{said[:SUMMARY_LINE_CHARS]}{'…' if len(said) > SUMMARY_LINE_CHARS else ''}"
            )
        while len(lines) > 1 and count_tokens("\n".join(lines)) > limit:
            lines.pop(0)
        return "\n".join(lines)
