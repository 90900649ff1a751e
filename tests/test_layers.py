"""The house rules the layout relies on (docs/architecture.md): the dependency direction
dingbot → api → agent, and a one-line docstring saying what lives in each package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"agent": ("api", "dingbot"), "api": ("dingbot",)}


def imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_never_imports_the_layers_above_it(layer: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN[layer]
    ]
    assert wrong == []


def test_every_package_says_in_one_line_what_lives_there() -> None:
    for init in sorted(p for top in ("agent", "api", "dingbot") for p in (ROOT / top).rglob("__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring, f"{init.relative_to(ROOT)} has no docstring"
        assert "\n" not in docstring.strip(), f"{init.relative_to(ROOT)}: one line, please"
