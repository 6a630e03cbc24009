"""Runs every shipped clause test file (config/bundled/tests/*.yaml) through the real
engine, one pytest case per test case, and checks that broken fixtures are rejected."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from clausewatch.cli import main
from config import BUNDLED_DIR
from config.clausetests import (
    LoadedClauseTests,
    load_clause_test_file,
    run_case,
)
from config.documents import ConfigError
from config.files import load_clause_file

FIXTURES = Path(__file__).parent / "clause_tests"
SHIPPED_TEST_FILES = sorted((BUNDLED_DIR / "tests").glob("*.yaml"))
# Test-only clause files live next to their tests here (broken/ holds rejected fixtures).
TEST_FILES = SHIPPED_TEST_FILES + sorted(FIXTURES.glob("*-tests.yaml"))
CLAUSE_FILES = sorted((BUNDLED_DIR / "clauses").glob("*.yaml"))


@cache
def _loaded(path: Path) -> LoadedClauseTests:
    return load_clause_test_file(path)


def _cases() -> list[pytest.ParameterSet]:
    params = []
    for path in TEST_FILES:
        for index, case in enumerate(_loaded(path).spec.tests):
            marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
            params.append(pytest.param(path, index, id=f"{path.stem}::{case.name}", marks=marks))
    return params


@pytest.mark.parametrize(("path", "index"), _cases())
def test_clause_case(path: Path, index: int) -> None:
    loaded = _loaded(path)
    result = run_case(loaded, loaded.spec.tests[index])
    assert result.ok, result.report()


def test_every_shipped_clause_has_a_test_file_with_firing_and_silent_cases() -> None:
    tested: dict[str, dict[str, bool]] = {}
    for path in SHIPPED_TEST_FILES:
        loaded = _loaded(path)
        for case in loaded.spec.tests:
            ids = set(case.clauses) or {v.id for v in loaded.versions}
            for clause_id in ids:
                seen = tested.setdefault(clause_id, {"fires": False, "silent": False})
                fired = [v for v in case.violations or () if v.clause == clause_id]
                if fired:
                    seen["fires"] = True
                elif case.violations is not None and not case.xfail:
                    seen["silent"] = True
    shipped = {c.id for path in CLAUSE_FILES for c in load_clause_file(path).clauses}
    missing = sorted(shipped - set(tested))
    assert not missing, f"clauses without tests: {missing}"
    one_sided = sorted(c for c in shipped if not all(tested[c].values()))
    assert not one_sided, f"clauses without both a firing and a silent case: {one_sided}"


def test_a_wrong_expectation_fails_and_says_what_differed() -> None:
    """The runner is not vacuous: move an expected start and the case must fail."""
    loaded = _loaded(BUNDLED_DIR / "tests" / "jianke-2008-115.yaml")
    case = next(c for c in loaded.spec.tests if c.name.startswith("violation - 25.0"))
    expected = case.violations
    assert expected
    wrong = case.model_copy(
        update={"violations": (expected[0].model_copy(update={"start": 60.0}),)}
    )
    result = run_case(loaded, wrong)
    assert not result.ok
    assert "expected violation of temp.cooling.min on th-meeting-a from +1m" in result.report()
    assert "unexpected violation of temp.cooling.min v1 on th-meeting-a from +0s" in result.report()


def test_expecting_silence_fails_when_the_clause_fires() -> None:
    loaded = _loaded(BUNDLED_DIR / "tests" / "jianke-2008-115.yaml")
    case = next(c for c in loaded.spec.tests if c.name.startswith("violation - 25.0"))
    result = run_case(loaded, case.model_copy(update={"violations": ()}))
    assert not result.ok
    assert "unexpected violation" in result.report()


def test_broken_clause_fixture_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        load_clause_file(FIXTURES / "broken" / "broken-clauses.yaml")
    text = str(caught.value)
    assert "broken-clauses.yaml: clauses[0].check: an obligation needs exactly one" in text
    assert "broken-clauses.yaml: clauses[1]: check refers to $limit" in text
    assert "broken-clauses.yaml: clauses[2].schedule.windows[0]" in text


def test_broken_clause_test_fixture_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        load_clause_test_file(FIXTURES / "broken" / "broken-tests.yaml")
    text = str(caught.value)
    assert "tests[0].series.th-999.temperature: the site has no device 'th-999'" in text
    assert "tests[0].violations[0].clause: clause 'temp.nope' is not under test" in text
    assert "tests[1].series.ac-201.hvac_mode: 'hvac_mode' has no state named 'chilling'" in text
    assert "tests[1].statuses[0].space: the site has no space 'b1-9f'" in text


def test_a_case_that_expects_nothing_is_rejected(tmp_path: Path) -> None:
    config = BUNDLED_DIR
    path = tmp_path / "empty-case.yaml"
    path.write_text(
        f"clause_file: {config / 'clauses' / 'jianke-2008-115.yaml'}\n"
        f"site_file: {config / 'sites' / 'demo-hq.yaml'}\n"
        "tests:\n"
        "  - name: nothing expected\n"
        "    start: 2026-07-01T09:00:00+08:00\n"
        "    series: {th-201.temperature: 25.0x10}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_clause_test_file(path)
    assert f"{path}: tests[0]: a case must expect something" in str(caught.value)


def test_cli_test_clauses_runs_the_bundled_tests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test-clauses"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith("expected failure(s)") and " 0 failed" in last


def test_cli_test_clauses_fails_on_a_wrong_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = FIXTURES / "issue-example-tests.yaml"
    text = source.read_text(encoding="utf-8").replace("start: 4m, end: 6m", "start: 4m, end: 7m")
    text = text.replace(
        "clause_file: issue-example.yaml", f"clause_file: {FIXTURES}/issue-example.yaml"
    )
    wrong = tmp_path / "wrong-tests.yaml"
    wrong.write_text(text, encoding="utf-8")
    assert main(["test-clauses", str(wrong)]) == 1
    out = capsys.readouterr().out
    assert f"{wrong}: 'truth table of T >= 25.7 or (T >= 23.7 and RH > 62)' failed:" in out
    assert "expected violation of example.compound on th from +4m to +7m: not produced" in out
    assert out.strip().splitlines()[-1] == "2 passed, 1 failed, 0 expected failure(s)"
