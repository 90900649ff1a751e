"""`dingbot settings`: the settings reference, made from the Settings fields (agent/settings/reference.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# Where the generated files live, relative to the project root.
MARKDOWN_FILE = Path("docs/settings.md")
ENV_FILE = Path(".env.example")


def generated_files() -> dict[Path, str]:
    """Each generated file and the text it must hold."""
    from agent.settings.reference import render_env, render_markdown

    return {MARKDOWN_FILE: render_markdown(), ENV_FILE: render_env()}


def _run(args: argparse.Namespace) -> int:
    from agent.settings.config import PROJECT_ROOT

    if args.write:
        for path, text in generated_files().items():
            (PROJECT_ROOT / path).write_text(text, encoding="utf-8")
            print(f"wrote {path}")
        return 0
    sys.stdout.write(generated_files()[ENV_FILE if args.env else MARKDOWN_FILE])
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "settings",
        help="print the settings reference (Markdown), or --env an .env.example",
        description="Every setting with its default, accepted values and meaning, from the code itself.",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--env", action="store_true", help="print a commented .env.example instead")
    choice.add_argument(
        "--write", action="store_true", help=f"rewrite {MARKDOWN_FILE} and {ENV_FILE} in the project"
    )
    parser.set_defaults(handler=_run)
