"""One source for settings: the reference files are generated from the Settings fields and never drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.settings.config import PROJECT_ROOT, Settings
from agent.settings.loading import load_settings
from agent.settings.reference import fix_hint, rows
from dingbot.cli import main
from dingbot.settings_reference import ENV_FILE, MARKDOWN_FILE, generated_files

SEED_NAMES = (
    "OPENAI_API_KEY",
    "OPENAI_API_BASE",
    "OPENAI_MODEL",
    "FORCE_MOCK_OPENAI",
    "ACCESS_TOKEN",
    "SECRET",
    "PORT",
    "DATABASE_PATH",
    "CHECK_INTERVAL_SECONDS",
)


@pytest.mark.parametrize("path", [MARKDOWN_FILE, ENV_FILE], ids=str)
def test_generated_files_match_the_code(path: Path) -> None:
    on_disk = (PROJECT_ROOT / path).read_text(encoding="utf-8")
    assert on_disk == generated_files()[path], (
        f"{path} is out of date with agent/settings/config.py: run `dingbot settings --write`"
    )


def test_every_field_is_documented_in_both_languages_and_has_a_section() -> None:
    found = rows()
    assert len(found) == len(Settings.model_fields)
    for row in found:
        assert row.en.strip(), f"{row.name} has no English description"
        assert row.zh.strip(), f"{row.name} has no Chinese description"
        assert row.section, f"{row.name} is in no section"
    reference = generated_files()[MARKDOWN_FILE]
    for name in SEED_NAMES:
        assert f"| `{name}` |" in reference


def test_the_env_example_uncommented_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = generated_files()[ENV_FILE].splitlines()
    assignments = [line.removeprefix("# ") for line in lines if line.startswith("# ") and "=" in line]
    assignments = [a for a in assignments if a.split("=", 1)[0].isupper() and " " not in a.split("=", 1)[0]]
    assert len(assignments) == len(Settings.model_fields)
    (tmp_path / ".env").write_text("\n".join(assignments) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    loaded = load_settings(runnable=False)
    assert loaded == Settings(_env_file=None)  # type: ignore[call-arg]


def test_every_setting_that_can_be_rejected_has_a_hint_with_its_values() -> None:
    """Free text (keys, names, ids) is never rejected for its form; everything else says what fits."""
    for row in rows():
        if row.rule in ("text", "secret", "path"):
            continue
        hint = fix_hint(row.name.lower())
        assert hint.startswith(("use ", "leave ", "point ")), f"{row.name}: {hint}"


def test_the_command_prints_the_reference_and_the_env_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    assert capsys.readouterr().out == generated_files()[MARKDOWN_FILE]
    assert main(["settings", "--env"]) == 0
    assert capsys.readouterr().out == generated_files()[ENV_FILE]
