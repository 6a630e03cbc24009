"""`clausewatch check`: validates files and directories of any kind (sites, clauses, clause
tests), each recognised by its top-level keys, with the cross-file checks over everything given
together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.clausetests import load_clause_test_file
from config.documents import ConfigError, Problem, YamlDocument, read_yaml
from config.files import load_files, yaml_files

CONFIG_SUBDIRS = ("sites", "clauses", "tests")


@dataclass
class _Documents:
    """Files sorted by what they are."""

    sites: list[Path] = field(default_factory=list)
    clauses: list[Path] = field(default_factory=list)
    tests: list[Path] = field(default_factory=list)


def classify(path: Path, doc: YamlDocument) -> str | None:
    """'site', 'clauses' or 'tests' by the file's top-level keys; None if none fits."""
    if not isinstance(doc.data, dict):
        return None
    if "site" in doc.data and "spaces" in doc.data:
        return "site"
    if "standard" in doc.data:
        return "clauses"
    if "tests" in doc.data:
        return "tests"
    return None


@dataclass
class CheckResult:
    problems: list[Problem]
    sites: int
    clause_files: int
    clause_versions: int
    test_files: int


def check_paths(paths: Sequence[str | Path]) -> CheckResult:
    """Validates files and directories; each file is taken as a site, clause or clause-test file
    by its top-level keys. A directory with sites/, clauses/ or tests/ inside is a configuration
    directory and only those are read; any other directory is searched for *.yaml / *.yml.
    Cross-file checks run over everything given together."""
    problems: list[Problem] = []
    documents = _Documents()
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            layout = [path / sub for sub in CONFIG_SUBDIRS if (path / sub).is_dir()]
            # A configuration directory: only its operator files (scenarios are not checked).
            for directory in layout or [path]:
                files.extend(yaml_files(directory))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), "", "no such file or directory"))
    for path in dict.fromkeys(files):
        try:
            doc = read_yaml(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        kind = classify(path, doc)
        if kind is None:
            problems.append(
                Problem(
                    str(path),
                    "",
                    "not a site, clause or clause-test file (expected top-level keys "
                    "'site' and 'spaces', 'standard', or 'tests')",
                )
            )
            continue
        {"site": documents.sites, "clauses": documents.clauses, "tests": documents.tests}[
            kind
        ].append(path)
    loaded, found = load_files(documents.sites, documents.clauses)
    problems.extend(found)
    tests_loaded = 0
    for path in documents.tests:
        try:
            load_clause_test_file(path)
            tests_loaded += 1
        except ConfigError as exc:
            problems.extend(exc.problems)
    return CheckResult(
        problems=problems,
        sites=len(loaded.sites),
        clause_files=len(loaded.clause_files),
        clause_versions=len(loaded.clause_versions()),
        test_files=tests_loaded,
    )
