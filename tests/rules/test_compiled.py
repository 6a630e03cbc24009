"""Whether the engine and decoder under test are the mypyc-compiled ones that installing builds
(setup.py)."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("package", "module"), [("rules", "rules.engine"), ("ingest", "ingest.decode")]
)
def test_the_hot_modules_under_test_are_compiled(package: str, module: str) -> None:
    # Written by setup.py: the modules it compiles in the package, with their sources' hashes.
    init = importlib.import_module(package).__file__
    assert init is not None
    record = Path(init).resolve().parent / "compiled-sources.json"
    recorded = sorted(json.loads(record.read_text())) if record.exists() else []
    assert not recorded or module in recorded
    pure = [
        name
        for name in recorded
        if not isinstance(
            importlib.import_module(name).__loader__, importlib.machinery.ExtensionFileLoader
        )
    ]
    if recorded and not pure:
        return
    problem = f"pure Python: {', '.join(pure)}" if recorded else f"no build record ({record})"
    if os.environ.get("CI"):
        pytest.fail(f"{package} under test is not compiled ({problem}); see the install log")
    pytest.skip(f"{package} under test is {problem}; `.venv/bin/pip install -e .` compiles it")
