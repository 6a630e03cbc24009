"""`clausewatch check`: validates files and directories of any kind (sites, clauses, clause
tests, holiday schedules), each recognised by its top-level keys, with the cross-file checks
over everything given together, and says which years have no official holiday schedule."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.clausetests import load_clause_test_file
from config.documents import ConfigError, Problem, YamlDocument, read_yaml
from config.files import load_files, yaml_files
from config.holidays import (
    BUNDLED_HOLIDAYS_DIR,
    holiday_files,
    is_holiday_document,
    load_schedules,
    today_in_china,
    validate_holiday_document,
)
from rules.holidays import CalendarCoverage, OfficialCalendar, calendar_coverage

CONFIG_SUBDIRS = ("sites", "clauses", "tests", "holidays")
__all__ = ["CheckResult", "check_paths", "classify", "today_in_china"]


@dataclass
class _Documents:
    """Files sorted by what they are."""

    sites: list[Path] = field(default_factory=list)
    clauses: list[Path] = field(default_factory=list)
    tests: list[Path] = field(default_factory=list)
    holidays: list[Path] = field(default_factory=list)


def classify(path: Path, doc: YamlDocument) -> str | None:
    """'site', 'clauses', 'tests', 'holidays' or 'routes' (notification routes, checked by the
    alert service's loader: clausewatch/cli/check.py) by the file's top-level keys; None if
    none fits."""
    if not isinstance(doc.data, dict):
        return None
    if "site" in doc.data and "spaces" in doc.data:
        return "site"
    if "standard" in doc.data:
        return "clauses"
    if "tests" in doc.data:
        return "tests"
    if is_holiday_document(doc):
        return "holidays"
    if "routes" in doc.data:
        return "routes"
    return None


@dataclass
class CheckResult:
    problems: list[Problem]
    sites: int
    clause_files: int
    clause_versions: int
    test_files: int
    holiday_schedules: int
    # The bundled holiday schedules with those given replacing their years, as of `today`.
    calendar: CalendarCoverage


def check_paths(paths: Sequence[str | Path], today: dt.date | None = None) -> CheckResult:
    """Validates files and directories; each file is taken as a site, clause, clause-test or
    holiday file by its top-level keys. A directory with sites/, clauses/, tests/ or holidays/
    inside is a configuration directory and only those are read; any other directory is
    searched for *.yaml / *.yml. Cross-file checks run over everything given together. The
    calendar coverage is that of the bundled holiday schedules with the valid ones given
    replacing their years, judged for `today`'s year (default: today in China)."""
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
                    "not a site, clause, clause-test or holiday file (expected top-level "
                    "keys 'site' and 'spaces', 'standard', 'tests', or 'year' and 'holidays')",
                )
            )
            continue
        if kind == "routes":
            continue
        if kind == "holidays":
            try:
                validate_holiday_document(path, doc)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
        {
            "site": documents.sites,
            "clauses": documents.clauses,
            "tests": documents.tests,
            "holidays": documents.holidays,
        }[kind].append(path)
    loaded, found = load_files(documents.sites, documents.clauses)
    problems.extend(found)
    tests_loaded = 0
    for path in documents.tests:
        try:
            load_clause_test_file(path)
            tests_loaded += 1
        except ConfigError as exc:
            problems.extend(exc.problems)
    bundled, bundled_problems = load_schedules(holiday_files(BUNDLED_HOLIDAYS_DIR))
    given, _ = load_schedules(documents.holidays)  # validated above
    problems.extend(bundled_problems)
    calendar = OfficialCalendar({**bundled, **given}.values())
    return CheckResult(
        problems=problems,
        sites=len(loaded.sites),
        clause_files=len(loaded.clause_files),
        clause_versions=len(loaded.clause_versions()),
        test_files=tests_loaded,
        holiday_schedules=len(documents.holidays),
        calendar=calendar_coverage(calendar, today or today_in_china()),
    )
