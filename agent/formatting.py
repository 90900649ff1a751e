"""Channel-neutral reply shaping: does a text have Markdown structure, and what is its title."""

from __future__ import annotations

import re

_STRUCTURE = re.compile(
    r"^\s{0,3}(#{1,6}\s|[-*+]\s|\d+[.)]\s|>\s|```|\|.*\|)"  # heading, list, quote, code fence, table row
    r"|\*\*[^*\n]+\*\*"  # bold
    r"|\[[^\]\n]+\]\([^)\s]+\)",  # link
    re.MULTILINE,
)
_MARKUP = re.compile(r"[#*>`_\[\]|]|\(http[^)]*\)")


def has_structure(text: str) -> bool:
    """True when the text uses Markdown worth rendering (headings, lists, bold, links, code, tables)."""
    return bool(_STRUCTURE.search(text))


def title_of(text: str, limit: int = 20) -> str:
    """A short plain title (chat-list preview) from the first line with words; "" when there is none."""
    for line in text.splitlines():
        plain = _MARKUP.sub("", line).strip(" -+.:：")
        if plain:
            return plain if len(plain) <= limit else plain[: limit - 1] + "…"
    return ""
