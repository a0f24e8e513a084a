"""Each module's docstring says what it may import ("Imports: ..."); this holds
the words to the code, so the import graph a reader is told is the real one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dnsd"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _declared(doc: str) -> set[str] | None:
    """The dnsd modules the docstring's "Imports:" sentence names (``x`` in
    double backquotes), or None when it has none."""
    match = re.search(r"Imports:(.*?)(?:\.\s*$|\.\s+[A-Z]|\Z)", doc, re.S)
    if match is None:
        return None
    return {name for name in re.findall(r"``([a-z_.]+)``", match.group(1))}


def _imported(tree: ast.Module, name: str) -> set[str]:
    """The dnsd modules the code imports, at the top or inside functions,
    relative to the package (``dnsd.sources.base`` -> ``sources.base``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "dnsd":  # from dnsd import logs, build
                found.update(alias.name for alias in node.names if alias.name != "__version__")
            elif node.module.startswith("dnsd."):
                found.add(node.module.removeprefix("dnsd."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("dnsd.") for a in node.names
                         if a.name.startswith("dnsd."))
    own = name.removeprefix("dnsd.")
    return {m for m in found if m != own and not m.startswith(own + ".")}


def _covered(module: str, declared: set[str], package: str) -> bool:
    """``sources`` covers ``sources.base``; inside ``sources``, ``base`` does too."""
    candidates = {module}
    if package:
        candidates.add(module.removeprefix(package + "."))
    return any(c == d or c.startswith(d + ".") for c in candidates for d in declared)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_docstring_names_every_dnsd_import(path: Path) -> None:
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree) or ""
    name = _module_name(path)
    imported = _imported(tree, name)
    declared = _declared(doc)
    if declared is None:
        assert not imported or path.name == "__init__.py", (
            f"{name} imports {sorted(imported)} but its docstring has no 'Imports:'")
        return
    package = name.removeprefix("dnsd.").rpartition(".")[0]
    missing = sorted(m for m in imported if not _covered(m, declared, package))
    assert not missing, f"{name} imports {missing}, which its docstring does not name"
