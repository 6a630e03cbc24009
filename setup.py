"""Builds clausewatch with its hot modules compiled to C by mypyc: the rules engine's
(docs/design.md, "The compiled engine") and the ingest decoder's. Where compiling fails, it warns
and installs them as pure Python: the same code, about two thirds as fast.

Every build writes a record beside the compiled modules of each package (rules/ and ingest/
compiled-sources.json): the SHA-256 of each module's source as mypyc read it. Importing the
package refuses a compiled module whose source no longer matches (`rules.refuse_stale_extensions`):
a stale extension would otherwise shadow the edited .py in silence.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
# The modules a reading runs through. The rest of rules/ (clause and site models, schedules,
# durations, verdicts) runs at binding time or builds outputs: compiling it gains nothing
# measurable, and pydantic models and frozen dataclasses are best left as they are.
COMPILED = (
    "rules/engine.py",
    "rules/_instances.py",
    "rules/_slots.py",
    "rules/_conditions.py",
    "rules/_data_quality.py",
    "rules/_obligations.py",
    "rules/_quotas.py",
    "rules/runs.py",
    "rules/_dedupe.py",
    # Every MQTT message goes through it: a fifth of the service's CPU in the end-to-end
    # profile (issue 24), about 1.4 times faster compiled.
    "ingest/decode.py",
)
RECORD_NAME = "compiled-sources.json"  # in each package with compiled modules


def _warn(message: str) -> None:
    print(f"WARNING: {message}; the hot modules are installed as pure Python", file=sys.stderr)


def _write_records(compiled: tuple[str, ...]) -> None:
    packages: dict[Path, dict[str, str]] = {}
    for path in compiled:
        module = path.removesuffix(".py").replace("/", ".")
        source = (HERE / path).read_bytes()
        packages.setdefault((HERE / path).parent, {})[module] = hashlib.sha256(source).hexdigest()
    for folder, sources in packages.items():
        (folder / RECORD_NAME).write_text(json.dumps(sources, indent=1, sort_keys=True) + "\n")


def _remove_stale_extensions() -> None:
    """Extensions left in the source tree by an earlier build (editable installs put them
    there) would shadow the pure modules of this one."""
    for path in COMPILED:
        for stale in (HERE / path).parent.glob(Path(path).stem + ".*.so"):
            stale.unlink()
    for stale in HERE.glob("rules__mypyc.*.so"):  # their shared library (group_name below)
        stale.unlink()


class BuildExtOrPure(build_ext):
    """build_ext that falls back to pure Python when the C compiler fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # a missing compiler or headers: any failure means fall back
            _warn(f"compiling with mypyc failed ({exc})")
            _remove_stale_extensions()


# pip runs this file for metadata alone (egg_info, dist_info) before it builds: compiling then
# would only triple the time an install takes.
BUILDING = any(
    command in sys.argv[1:]
    for command in ("build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install")
)


def _extensions() -> list[object]:
    if not BUILDING:
        return []
    # Hashes of the sources as mypyc reads them, written before the build runs: build_py copies
    # the record into a wheel before build_ext compiles. A record naming modules that then fail
    # to compile is harmless: only modules loaded from an extension are checked.
    _write_records(COMPILED)
    try:
        from mypyc.build import mypycify

        return list(mypycify(list(COMPILED), opt_level="3", group_name="rules"))
    except (Exception, SystemExit) as exc:  # mypyc reports type errors by exiting
        _warn(f"mypyc could not compile {', '.join(COMPILED)} ({exc!r})")
        _remove_stale_extensions()
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExtOrPure})
