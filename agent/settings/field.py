"""A documented setting: the field and its description in Chinese and English, which the reference is
made from (agent/settings/reference.py)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, JsonValue


def setting(
    default: Any, zh: str, en: str, *, section: str = "", shown: str = "", fix: str = "", **rules: Any
) -> Any:
    """A documented field: its Chinese and English description are the settings reference
    (docs/settings.md, .env.example, `dingbot settings`). `section` starts a new group of the reference,
    `shown` is the default as people should read it, `fix` replaces the hint derived from the rules."""
    pairs = (("zh", zh), ("section", section), ("shown", shown), ("fix", fix))
    extra: dict[str, JsonValue] = {key: value for key, value in pairs if value}
    return Field(default, description=en, json_schema_extra=extra, **rules)
