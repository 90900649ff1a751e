"""The docs tell the truth: their transcripts are rerun (tests/doc_transcripts.py), their links resolve,
the README stays short and starts with the two commands CI runs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doc_transcripts import DOCS, ROOT, Block, Sandbox, blocks, loose, sandbox

ALL_BLOCKS = [block for path in DOCS for block in blocks(path)]


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with sandbox() as running:
        yield running


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.name for b in ALL_BLOCKS])
def test_transcript_matches_what_the_commands_print(box: Sandbox, block: Block) -> None:
    assert block.steps, f"{block.name}: a console block without `$ ` commands"
    for step in block.steps:
        actual = box.run(step.command)
        assert loose(actual) == loose(step.output), (
            f"{block.name}: `{step.command}` printed something else "
            f"(python -m tests.doc_transcripts --update rewrites the docs):\n" + "\n".join(actual)
        )


def test_there_are_transcripts_in_the_readme_and_the_docs() -> None:
    assert any(b.path.name == "README.md" for b in ALL_BLOCKS)
    assert len({b.path for b in ALL_BLOCKS}) >= 5


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_relative_links_point_at_files_that_exist(path: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_no_machine_paths_in_the_docs(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for machine in ("/work/", "/root/", "/tmp/pytest", str(ROOT)):
        assert machine not in text, f"{path.name} shows a path of this machine: {machine}"


def test_the_readme_is_short_and_starts_with_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    venv = "python3 -m venv .venv && .venv/bin/pip install"
    assert commands == [
        f"{venv} -e . && FORCE_MOCK_OPENAI=1 .venv/bin/python -m dingbot.server",
        f"{venv} -e '.[dev]' && .venv/bin/python -m pytest",
    ]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci  # CI runs the README's test command exactly as written
