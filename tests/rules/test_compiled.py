"""Whether the engine under test is the mypyc-compiled one that installing builds (setup.py)."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
from pathlib import Path

import pytest

import rules

# Written by setup.py: the modules it compiles, with the hashes of their sources.
RECORD = Path(rules.__file__).resolve().parent / "compiled-sources.json"


def test_the_engine_under_test_is_compiled() -> None:
    recorded = sorted(json.loads(RECORD.read_text())) if RECORD.exists() else []
    assert not recorded or "rules.engine" in recorded
    pure = [
        name
        for name in recorded
        if not isinstance(
            importlib.import_module(name).__loader__, importlib.machinery.ExtensionFileLoader
        )
    ]
    if recorded and not pure:
        return
    problem = f"pure Python: {', '.join(pure)}" if recorded else f"no build record ({RECORD})"
    if os.environ.get("CI"):
        pytest.fail(f"the engine under test is not compiled ({problem}); see the install log")
    pytest.skip(f"the engine under test is {problem}; `.venv/bin/pip install -e .` compiles it")
