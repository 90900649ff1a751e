"""The write-path guard: facts that must never become long-term memories.

Runs in code, after extraction and before storing, so a poisoned extraction (a prompt injection that
made the model "remember" an instruction) is stopped whatever the extraction prompt says.
Dropped: instructions to the bot, secrets (keys, passwords, tokens, codes), ID, passport and bank-card
numbers. Text is normalised first (NFKC: full-width letters and digits, case), so spelling tricks such
as "Ａｌｗａｙｓ" or "6222.0202.0000.1234" are caught too. Ordinary facts that merely use words like
"always" or "从现在开始" about the person ("用户从现在开始戒烟", "I always use vim") are kept.
"""

from __future__ import annotations

import re
import unicodedata

_BOT = r"(你|您|助手|机器人|ai|模型|bot|assistant)"
_REPLY = r"(回答|回复|答复|应答|称呼|说话|讲话|输出|用语|语气|口吻)"
_ALWAYS = r"(都|一律|所有|每次|永远|总是|始终|一直|今后|以后|以後|从现在开始|从今以后|从今往后)"

_INSTRUCTION = re.compile(
    "|".join(
        [
            # English: commands about how to answer, or aimed at the bot
            r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instruction|prompt|rule|guidance|direction)s?\b",
            r"(^|[,.;:!?]\s*|from now on,?\s*)you\s+(are|must|should|will|shall|have to|need to)\b",
            r"\bfrom now on\b.{0,30}\b(answer|respond|reply|speak|talk|write|call|you)\b",
            r"\b(always|never|only|exclusively)\s+(answer|respond|reply|speak|talk|write|call|refer|obey|follow)\b",
            r"\b(answer|respond|reply|speak|talk|write)\w*\s+(only|exclusively|always)\b",
            r"\bevery\s+(reply|answer|response|message)\s+(must|should|has to|needs to|will)\b",
            r"(^|\byou\b.{0,20})\b(act|behave|pretend|roleplay|role-play)\s+(as|like|to be)\b",
            r"\bsystem\s+prompt\b",
            r"\b(the\s+)?(assistant|bot|ai|model)\s+(should|must|shall|has to|needs to|is to)\b",
            # Chinese: addressed to the bot, or about how every answer must look
            r"(?<![的之])" + _BOT + r".{0,8}(必须|应该|应当|只能|不能|不要|不许|不准|要用|要以|要称|务必)",
            r"(回答|回复|答复)(用户|他|她|我|别人)?(时|的时候)",
            r"(从现在开始|从今以后|从今往后|以后|以後|今后)" + r".{0,4}" + _BOT,
            _ALWAYS + r".{0,10}" + _REPLY,
            _REPLY + r".{0,6}(都|一律|必须|只能|只用|永远|总是|始终)",
            r"(忽略|无视|忘记|忘掉|不要理会|覆盖).{0,12}(指令|指示|提示词|规则|设定|system)",
            r"(你|请|助手|机器人).{0,6}(扮演|假装|冒充|充当)",
            r"系统提示",
            r"要求" + _BOT,
        ]
    ),
    re.IGNORECASE,
)

_SECRET = re.compile(
    "|".join(
        [
            r"\bsk[-_][a-z0-9_\-]{12,}",  # OpenAI-style and other "sk-"/"sk_" keys
            r"\bakia[0-9a-z]{16}\b",  # AWS access keys
            r"\bgh[pousr]_[a-z0-9]{20,}",  # GitHub tokens
            r"\bxox[abprs]-[a-z0-9-]{10,}",  # Slack tokens
            r"\beyj[a-z0-9_-]{8,}\.[a-z0-9_-]{8,}",  # JWTs
            r"\bsec[0-9a-f]{32,}",  # DingTalk robot secrets
            # a secret word followed closely by a value: 密码 hunter2, token: abc123, pin is 4321
            r"(password|passwd|passcode|pwd|\bpw\b|\bpin\b|密码|口令|验证码|动态码|token|令牌|secret|密钥|私钥"
            r"|api[ _-]?key|access[ _-]?key)\W{0,3}(is|are|was|是|为|设为|改成|换成)?\W{0,3}"
            r"[a-z0-9!@#$%^&*_\-]{3,}",
            # long random-looking tokens: 32+ letters and digits, both present
            r"(?<![a-z0-9])(?=[a-z0-9_\-+/]*\d)(?=[a-z0-9_\-+/]*[a-z])[a-z0-9_\-+/]{32,}",
        ]
    ),
    re.IGNORECASE,
)

_ID_NUMBER = re.compile(
    # resident ID (18 characters), the old 15-digit ID; passports with their word
    r"(?<![0-9])[1-9]\d{5}(18|19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}[\dx](?![0-9])"
    r"|(?<![0-9])[1-9]\d{7}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}(?![0-9])"
    r"|(护照|passport).{0,8}[a-z]{1,2}\d{7,8}",
    re.IGNORECASE,
)
_CARD_WORDS = re.compile(r"卡|card|银行|bank|账号|账户|account|尾号", re.IGNORECASE)
_LONG_NUMBER = re.compile(r"(?<![0-9])\d{13,19}(?![0-9])")
_DIGIT_SEPARATORS = re.compile(r"(?<=\d)[\s.\-_·]+(?=\d)")
_TITLES = re.compile(r"《[^》]{0,60}》")  # book and song titles: 《你是我的眼》 is not an instruction


def _luhn(number: str) -> bool:
    total = 0
    for i, digit in enumerate(int(d) for d in reversed(number)):
        total += digit if i % 2 == 0 else (digit * 2 - 9 if digit > 4 else digit * 2)
    return total % 10 == 0


def _card_number(text: str) -> bool:
    """13-19 digits that are a card: said to be one, or passing the card checksum (Luhn)."""
    return any(_CARD_WORDS.search(text) or _luhn(match.group(0)) for match in _LONG_NUMBER.finditer(text))


def unsafe_reason(fact: str) -> str | None:
    """Why `fact` must not be stored ("instruction", "secret", "id_number"), or None when it may be."""
    text = unicodedata.normalize("NFKC", fact).casefold()
    joined = _DIGIT_SEPARATORS.sub("", text)
    if _INSTRUCTION.search(_TITLES.sub("《》", text)):
        return "instruction"
    if _SECRET.search(text):
        return "secret"
    if _ID_NUMBER.search(joined) or _card_number(joined):
        return "id_number"
    return None
