"""The pure rules engine: clause and site models, schedules, and the streaming evaluator.

Nothing in this package performs I/O or reads the wall clock: time comes in with the data
(event time) or through `advance(now)` from the caller.

The hot modules may be compiled by mypyc (setup.py). A compiled module is loaded in preference
to its .py, so one built from an older source would run in silence in place of the edited code:
importing the package refuses that (`refuse_stale_extensions`, which ingest/ calls too).
"""

from __future__ import annotations


def refuse_stale_extensions(package_name: str, init_file: str) -> None:
    """Raises ImportError when a module of the package `package_name` (whose __init__.py is
    `init_file`) would load from an extension compiled from another version of its source."""
    # Imports kept local: the package namespace stays as it was.
    import hashlib
    import importlib.machinery
    import importlib.util
    import json
    from pathlib import Path

    package = Path(init_file).resolve().parent
    record = package / "compiled-sources.json"
    built = json.loads(record.read_text()) if record.exists() else {}
    for source in package.glob("*.py"):
        if source.stem == "__init__":
            continue
        module = f"{package_name}.{source.stem}"
        spec = importlib.util.find_spec(module)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            continue
        if built.get(module) != hashlib.sha256(source.read_bytes()).hexdigest():
            raise ImportError(
                f"{spec.origin} was compiled from another version of {source}: rebuild it "
                "(`.venv/bin/pip install -e .`, or ./scripts/test) or delete it to run the "
                "pure Python module"
            )


refuse_stale_extensions(__name__, __file__)
