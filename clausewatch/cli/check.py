"""`clausewatch check PATH...` and `clausewatch test-clauses PATH...`."""

from __future__ import annotations

import argparse
from pathlib import Path

from clausewatch.cli import Commands
from config import BUNDLED_DIR, check
from config.clausetests import load_clause_test_file, run_case, test_files_in
from config.documents import ConfigError, Problem


def _check_command(args: argparse.Namespace) -> int:
    paths = args.paths or [BUNDLED_DIR]
    result = check.check_paths(paths, check.today_in_china())
    routes, route_problems = _check_routes(paths)
    problems = [*result.problems, *route_problems]
    for problem in problems:
        print(problem)
    # A year without an official holiday schedule is a warning, not a problem: the engine judges
    # it by the fallback rule, and the operator adds the notice when it is published.
    for gap in result.calendar.gaps:
        print(f"警告：{gap.message_zh()}")
        print(f"warning: {gap.message()}")
    years = result.calendar.years_with_data
    span = f" ({years[0]}–{years[-1]})" if years else ""
    summary = (
        f"{result.sites} site(s), {result.clause_files} clause file(s) with "
        f"{result.clause_versions} clause version(s), {result.test_files} clause test file(s), "
        f"{result.holiday_schedules} holiday schedule file(s), {routes} notification route(s); "
        f"official holiday schedules for {len(years)} year(s){span}"
    )
    if problems:
        print(f"{len(problems)} problem(s); loaded cleanly: {summary}")
        return 1
    print(f"ok: {summary}")
    return 0


def _check_routes(paths: list[Path]) -> tuple[int, list[Problem]]:
    """The notification routes of every directory's routes.yaml (alerts/routing.py): how many
    check out, and the problems of those that do not."""
    from clausewatch.service import ROUTES_FILE, load_routes

    directories = {
        (path if path.is_dir() else path.parent).resolve()
        for path in paths
        if path.is_dir() or path.name == ROUTES_FILE
    }
    count, problems = 0, list[Problem]()
    for directory in sorted(directories):
        try:
            count += len(load_routes(directory).routes)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return count, problems


def register(commands: Commands) -> None:
    """Adds `clausewatch check PATH...` and `clausewatch test-clauses PATH...`."""
    parser = commands.add(
        "check",
        "Validate site, clause, clause-test, holiday and routes.yaml files (files or "
        "directories); "
        "exits 1 on any problem. Warns (exit code unchanged) when this year, or next year "
        "within 60 days, has no official holiday schedule.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="files or directories (default: the bundled configuration)",
    )
    parser.set_defaults(func=_check_command, uses_holiday_calendar=False)

    runner = commands.add(
        "test-clauses",
        "Run clause test files (readings in, expected violations out) through the rules "
        "engine; exits 1 on any failed case.",
    )
    runner.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="clause test files or directories (default: the bundled clause tests)",
    )
    runner.set_defaults(func=_test_clauses_command)


def _test_clauses_command(args: argparse.Namespace) -> int:
    """Runs clause test files; prints failures; 1 if any case failed or a file is invalid."""
    paths = args.paths or [BUNDLED_DIR / "tests"]
    failed = passed = expected_failures = 0
    for path in test_files_in(paths):
        try:
            loaded = load_clause_test_file(path)
        except ConfigError as exc:
            print(exc)
            failed += 1
            continue
        for case in loaded.spec.tests:
            result = run_case(loaded, case)
            if case.xfail and not result.ok:
                expected_failures += 1
            elif case.xfail:
                print(f"{path}: {case.name!r} passed but is marked xfail: remove the mark")
                failed += 1
            elif result.ok:
                passed += 1
            else:
                print(result.report())
                failed += 1
    summary = f"{passed} passed, {failed} failed, {expected_failures} expected failure(s)"
    print(summary)
    return 1 if failed else 0
