"""The write-path guard: facts that must never become long-term memories.

Runs in code, after extraction and before storing, so a poisoned extraction (a prompt injection that
made the model "remember" an instruction) is stopped whatever the extraction prompt says.
Dropped: instructions to the bot, secrets (keys, passwords, tokens), ID and bank-card numbers.
"""

from __future__ import annotations

import re

_INSTRUCTION = re.compile(
    "|".join(
        [
            r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instruction|prompt|rule|previous|above|earlier)",
            r"\byou\s+(are|must|should|will|shall|have to|need to)\b",
            r"\bfrom now on\b",
            r"\b(always|never|only)\s+(answer|respond|reply|say|speak|talk|write|use|call|refer|end|start|"
            r"include|add|mention|tell|obey|follow)\b",
            r"\b(act|behave|pretend|roleplay|role-play)\s+(as|like|to be)\b",
            r"\bsystem\s+prompt\b",
            r"\b(the\s+)?(assistant|bot|ai|model)\s+(should|must|will|shall|has to|needs to|is to)\b",
            r"从现在(开始|起)",
            r"从今(以后|往后|天起)",
            r"以后(你|都|请|一律|每次|所有)",
            r"你(是|必须|要|应该|应当|只能|不能|不要|不许|得|需要)",
            r"(忽略|无视|忘记|忘掉|不要理会).{0,12}(指令|指示|提示|规则|设定|要求|之前|上面|以上)",
            r"(总是|永远|一直|每次|始终|一律)(都)?(用|回答|回复|说|称呼|以|使用|加上|带上)",
            r"(扮演|假装|冒充)",
            r"系统提示",
            r"(助手|机器人|AI|模型).{0,6}(必须|应该|应当|只能|要用|要以|要称)",
            r"要求(你|助手|机器人|AI|模型)",
        ]
    ),
    re.IGNORECASE,
)

_SECRET = re.compile(
    "|".join(
        [
            r"\bsk-[A-Za-z0-9_\-]{12,}",  # OpenAI-style keys
            r"\bAKIA[0-9A-Z]{16}\b",  # AWS access keys
            r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
            r"\bxox[abprs]-[A-Za-z0-9-]{10,}",  # Slack tokens
            r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
            r"\bSEC[0-9a-f]{32,}",  # DingTalk robot secrets
            r"(password|passwd|pwd|passcode|密码|口令|验证码|token|令牌|secret|密钥|私钥"
            r"|api[ _-]?key|access[ _-]?key)\s*(is|are|was|:|：|=|是|为|设为|改成|换成)",
            # long tokens: 32+ characters of letters and digits (both present)
            r"(?<![A-Za-z0-9])(?=[A-Za-z0-9_\-+/]*\d)(?=[A-Za-z0-9_\-+/]*[A-Za-z])[A-Za-z0-9_\-+/]{32,}",
        ]
    ),
    re.IGNORECASE,
)

_ID_NUMBER = re.compile(
    # resident ID (18 characters), the old 15-digit ID, bank cards (16-19 digits, spaces or dashes allowed)
    r"(?<![0-9])[1-9]\d{5}(18|19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![0-9])"
    r"|(?<![0-9])[1-9]\d{7}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}(?![0-9])"
    r"|(?<![0-9])(?:\d[ -]?){15,18}\d(?![0-9])"
)


_TITLES = re.compile(r"《[^》]{0,60}》")  # book and song titles: 《你是我的眼》 is not an instruction


def unsafe_reason(fact: str) -> str | None:
    """Why `fact` must not be stored ("instruction", "secret", "id_number"), or None when it may be."""
    if _INSTRUCTION.search(_TITLES.sub("《》", fact)):
        return "instruction"
    if _SECRET.search(fact):
        return "secret"
    if _ID_NUMBER.search(fact):
        return "id_number"
    return None
