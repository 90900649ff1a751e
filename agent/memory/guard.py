"""The write-path guard: facts that must never become long-term memories.

Runs in code, after extraction and before storing, so a poisoned extraction (a prompt injection that
made the model "remember" an instruction) is stopped whatever the extraction prompt says.
Dropped: instructions to the bot, secrets (keys, passwords, tokens, codes), ID, passport and bank-card
numbers. Text is normalised first, beyond NFKC: full-width letters and digits, case, every dash and
hyphen (U+2010–2015, U+2212…) to "-", odd and zero-width spaces, traditional characters to simplified
(for the words the rules use) and, for number checks, Chinese numerals to digits — so "Ａｌｗａｙｓ",
"sk‑abc…" with U+2011, "從現在開始", "密碼" or an ID number written 一一〇一… are caught too. Ordinary
facts that merely use words like "always" or "从现在开始" about the person ("用户从现在开始戒烟", "I always
use vim") are kept: tests/data/guard_cases.yaml holds 200+ cases of both.
"""

from __future__ import annotations

import re
import unicodedata

_BOT = r"(你|您|助手|机器人|ai|模型|bot|assistant)"
_REPLY = r"(回答|回复|答复|应答|称呼|说话|讲话|输出|用语|语气|口吻)"
_ALWAYS = (
    r"(都|一律|所有|每次|永远|总是|始终|一直|今后|以后|以後|此后|往后|从此|从现在开始|从现在起|从今天起|从今天开始"
    r"|从今以后|从今往后|接下来)"
)

_INSTRUCTION = re.compile(
    "|".join(
        [
            # English: commands about how to answer, or aimed at the bot
            r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instruction|prompt|rule|guidance|direction)s?\b",
            r"(^|[,.;:!?]\s*|from now on,?\s*)you\s+(are|must|should|will|shall|have to|need to)\b",
            r"\b(from now on|starting now|starting today|going forward|henceforth|from here on"
            r"|in (the )?future)\b.{0,30}\b(answer|respond|reply|speak|talk|write|call|you)\b",
            r"\bi\s+(want|need|would like|wish|expect|require)\s+you\s+to\b",
            r"\b(every|all|each)\s+(of\s+)?(your\s+)?(reply|replies|answer|answers|response|responses)\b",
            r"\b(always|never|only|exclusively)\s+(answer|respond|reply|speak|talk|write|call|refer|obey|follow)\b",
            r"\b(answer|respond|reply|speak|talk|write)\w*\s+(only|exclusively|always)\b",
            r"\bevery\s+(reply|answer|response|message)\s+(must|should|has to|needs to|will)\b",
            r"(^|\byou\b.{0,20})\b(act|behave|pretend|roleplay|role-play)\s+(as|like|to be)\b",
            r"\bsystem\s+prompt\b",
            r"\b(the\s+)?(assistant|bot|ai|model)\s+(should|must|shall|has to|needs to|is to)\b",
            # Chinese: addressed to the bot, or about how every answer must look
            r"(?<![的之])" + _BOT + r".{0,8}(必须|应该|应当|只能|不能|不要|不许|不准|要用|要以|要称|务必)",
            r"(要|想要|希望|想让|让|叫|命令|请求)"
            + _BOT
            + r".{0,20}(回答|回复|答复|说话|用|称呼|扮演|记住|忘记)",
            r"(回答|回复|答复)(用户|他|她|我|别人)?(时|的时候)",
            r"(从现在开始|从今以后|从今往后|以后|以後|今后)" + r".{0,4}" + _BOT,
            _REPLY + r".{0,6}(都|一律|必须|只能|只用|永远|总是|始终|所有人|每个人|任何人)",
            r"(忽略|无视|忘记|忘掉|不要理会|覆盖).{0,12}(指令|指示|提示词|规则|设定|system)",
            r"(你|请|助手|机器人).{0,6}(扮演|假装|冒充|充当)",
            r"系统提示",
            r"要求" + _BOT,
        ]
    ),
    re.IGNORECASE,
)

# "以后都用英文回答": an instruction, unless the clause is about what the person does ("用户总是回复得很快").
_ALWAYS_REPLY = re.compile(_ALWAYS + r".{0,10}" + _REPLY)
_PERSON_CLAUSE = re.compile(
    r"^\s*(用户|该用户|他|她|我)(?!.{0,12}(你|您|助手|机器人|bot|assistant|说|讲|表示|告诉|要求|希望|想|让|叫))"
)
_CLAUSES = re.compile(r"[,.;!?，。；！？、:：\"'“”‘’「」『』]")  # quoted words are a clause of their own


def _instruction(text: str) -> bool:
    if _INSTRUCTION.search(text):
        return True
    return any(
        _ALWAYS_REPLY.search(clause) and not _PERSON_CLAUSE.search(clause) for clause in _CLAUSES.split(text)
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
            r"(password|passwd|passcode|pwd|\bpw\b|(?<![a-z])pin(?![a-z])\s?(码|code)?|密码|口令|暗号|验证码|动态码|token"
            r"|令牌|secret|密钥|私钥|秘钥|api[ _-]?key|access[ _-]?key)"
            r"\W{0,3}(is|are|was|是|为|设为|改成|换成|:)?\W{0,3}[a-z0-9!@#$%^&*_\-]{3,}",
            # "pass": only with a value that has a digit (a bus pass is valid, "hunter2x" is a password)
            r"\bpass\b\W{0,3}(is|was|=|:)\W{0,3}(?=[a-z!@#$%^&*_\-]*\d)[a-z0-9!@#$%^&*_\-]{4,}",
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


_DASHES = re.compile(r"[\u2010-\u2015\u2212\u2043\ufe58\ufe63\uff0d]")
_ODD_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_INVISIBLE = re.compile(r"[\u200b-\u200d\u2060\ufeff\u00ad]")
# Traditional forms of the characters the rules look for (and a few that spell the same words).
_SIMPLIFIED = str.maketrans(
    "從現開後機請說話語氣應當須許準務設規則統詞們對時碼鑰證號銀賬帳戶護總遠續隻麼讓給將這個為記憶與並於",
    "从现开后机请说话语气应当须许准务设规则统词们对时码钥证号银账账户护总远续只么让给将这个为记忆与并于",
)
_NUMERALS = str.maketrans("〇零一二三四五六七八九壹贰叁肆伍陆柒捌玖两", "001234567891234567892")


def normalised(fact: str) -> str:
    """The text the rules read: see the module docstring."""
    text = unicodedata.normalize("NFKC", fact).casefold()
    text = text.replace("回覆", "回复").replace("答覆", "答复")  # 覆 alone stays: 覆盖 is simplified too
    text = _INVISIBLE.sub("", _ODD_SPACES.sub(" ", _DASHES.sub("-", text)))
    return text.translate(_SIMPLIFIED)


def unsafe_reason(fact: str) -> str | None:
    """Why `fact` must not be stored ("instruction", "secret", "id_number"), or None when it may be."""
    text = normalised(fact)
    joined = _DIGIT_SEPARATORS.sub("", text.translate(_NUMERALS))
    if _instruction(_TITLES.sub("《》", text)):
        return "instruction"
    if _SECRET.search(text):
        return "secret"
    if _ID_NUMBER.search(joined) or _card_number(joined):
        return "id_number"
    return None
