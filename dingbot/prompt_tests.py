"""`dingbot prompts test`: run the prompt regression cases in prompts/tests/ (agent/prompts/cases.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    prompts = sub.add_parser("prompts", help="prompt tools: `dingbot prompts test` runs prompts/tests/")
    actions = prompts.add_subparsers(dest="prompts_command", required=True)
    test = actions.add_parser(
        "test", help="run the prompt regression cases in prompts/tests/*.yaml (no model, no network)"
    )
    test.add_argument("--prompts-dir", type=Path, help="the prompts folder (default: PROMPTS_DIR)")
    test.add_argument("-k", dest="keyword", default="", help="only cases whose file or name contains this")
    test.add_argument(
        "--update", action="store_true", help="rewrite the snapshots with the prompts as they are now"
    )
    test.add_argument("-v", "--verbose", action="store_true", help="print the prompt of every case")
    test.set_defaults(handler=run)


def _prompts_folder(args: argparse.Namespace) -> Path:
    if args.prompts_dir is not None:
        return Path(args.prompts_dir)
    from agent.settings.loading import load_settings

    return load_settings(runnable=False).prompts_dir


def run(args: argparse.Namespace) -> int:
    import asyncio

    from agent.errors import ConfigError, PromptError
    from agent.prompts.cases import CaseFileError, load_cases, run_cases

    started = time.perf_counter()
    try:
        folder = _prompts_folder(args)
        cases = [c for c in load_cases(folder) if args.keyword in c.title]
        if not cases:
            print(f"dingbot: no prompt cases in {folder / 'tests'} match", file=sys.stderr)
            return 2
        results = asyncio.run(run_cases(folder, cases, update_snapshots=args.update))
    except CaseFileError as exc:
        print(f"✗ a prompt case file is invalid: {exc}", file=sys.stderr)
        return 1
    except PromptError as exc:
        print(f"✗ the prompts do not load: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"dingbot: {exc}", file=sys.stderr)
        return 2
    print(f"prompt cases in {folder / 'tests'}:")
    for result in results:
        if result.passed:
            print(f"✓ {result.case.title}")
            if args.verbose:
                print("\n".join(f"       | {line}" for line in result.prompt.splitlines()))
        else:
            print(result.report())
    failed = sum(not r.passed for r in results)
    seconds = time.perf_counter() - started
    summary = f"{len(results) - failed} passed, {failed} failed in {seconds:.1f} s"
    if args.update:
        summary += "; snapshots rewritten: review them with `git diff` before committing"
    print(summary)
    return 1 if failed else 0
