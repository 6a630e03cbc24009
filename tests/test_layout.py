"""The package layout of docs/design.md as installed: the top-level names are ours alone, and
the composition root is a leaf.

The packages are top-level modules (`api`, `rules`, `store`, ...), not one namespace
(docs/design.md, "Top-level names, not one namespace"); the risk accepted with that choice is a
clash with another distribution's module of the same name, so the environment the service runs
in is checked here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
PACKAGES = PYPROJECT["tool"]["importlinter"]["root_packages"]


def test_every_first_party_package_is_a_contracted_layer() -> None:
    """A new top-level package must join the import contracts (and docs/design.md's table)."""
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert found == set(PACKAGES)
    layered = {
        name.strip()
        for contract in PYPROJECT["tool"]["importlinter"]["contracts"]
        if contract["type"] == "layers"
        for layer in contract["layers"]
        for name in layer.split("|")
    }
    assert layered == set(PACKAGES)
    design = (ROOT / "docs" / "design.md").read_text("utf-8")
    for name in PACKAGES:
        assert f"`{name}/`" in design, f"docs/design.md's package table lacks {name}/"


def test_no_other_installed_distribution_provides_our_top_level_names() -> None:
    providers = importlib.metadata.packages_distributions()
    for name in PACKAGES:
        others = [d for d in providers.get(name, []) if d.lower() != "clausewatch"]
        assert not others, f"{name!r} is also installed by {others}: it would shadow ours"


def test_nothing_imports_the_composition_root() -> None:
    """The contracts say it too; this names the file when someone imports it from below."""
    offenders = []
    for name in PACKAGES:
        if name == "clausewatch":
            continue
        for path in (ROOT / name).rglob("*.py"):
            tree = ast.parse(path.read_text("utf-8"))
            for node in ast.walk(tree):
                modules = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                if any(m == "clausewatch" or m.startswith("clausewatch.") for m in modules):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
